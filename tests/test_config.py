"""n2sr.config is the one home of setting names and defaults: the workflow schema and the CLI agree with it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from n2sr.cli import build_parser, collect
from n2sr.config import METHOD_CONFIGS, DenoiseConfig, IngestConfig, ModelConfig, TrainConfig

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())
PROPS = SCHEMA["properties"]


def defaults(*classes: type) -> dict:
    return {f.name: f.default for cls in classes for f in dataclasses.fields(cls) if f.name != "model"}


def schema_defaults(section: str) -> dict:
    return {k: v["default"] for k, v in PROPS[section]["properties"].items()}


def test_schema_sections_are_the_dataclasses_with_their_defaults():
    workflow_train = {"retrain"}  # when the workflow retrains, not how a model trains
    assert {k: v for k, v in schema_defaults("train").items() if k not in workflow_train} == defaults(TrainConfig,
                                                                                                     ModelConfig)
    workflow_only = {"write_sr", "write_tiff"}  # extra outputs the workflow declares, not settings
    assert {k: v for k, v in schema_defaults("denoise").items() if k not in workflow_only} == defaults(DenoiseConfig)
    assert schema_defaults("ingest") == defaults(IngestConfig)
    for method, cls in METHOD_CONFIGS.items():
        assert schema_defaults(method) == defaults(cls), method


def _options(command: str) -> dict[str, argparse.Action]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {opt: action for action in sub.choices[command]._actions for opt in action.option_strings}


@pytest.mark.parametrize("command, classes", [
    ("train", [(TrainConfig, ""), (ModelConfig, "")] + [(cls, m) for m, cls in METHOD_CONFIGS.items()]),
    ("denoise", [(DenoiseConfig, "")]),
    ("ingest", [(IngestConfig, "")]),
])
def test_cli_has_one_option_per_field_and_leaves_defaults_to_the_dataclass(command, classes):
    options = _options(command)
    for cls, prefix in classes:
        for f in dataclasses.fields(cls):
            if f.name == "model":
                continue
            flag = "--" + (f"{prefix}-" if prefix else "") + f.name.replace("_", "-")
            assert flag in options, flag
            assert options[flag].default is None, flag  # the dataclass, not argparse, holds the default
    args = {"denoise": ["a", "b", "c"], "ingest": ["a", "b"]}.get(command, ["a", "--out", "m"])
    ns = build_parser().parse_args([command, *args])
    for cls, prefix in classes:
        assert collect(ns, cls, prefix=prefix) == cls(), cls.__name__


def test_a_value_travels_from_option_to_dataclass_unrenamed():
    ns = build_parser().parse_args(["denoise", "m.pt", "in.zarr", "out.zarr", "--overlap", "40", "--tile-size", "256"])
    cfg = ns.kwargs(ns)["cfg"]
    assert (cfg.overlap, cfg.tile_size) == (40, 256)
    ns = build_parser().parse_args(["train", "a.zarr", "--out", "m.pt", "--lr", "0.003", "--no-shared-weights"])
    cfg = ns.kwargs(ns)["cfg"]
    assert cfg.lr == 0.003 and cfg.model.shared_weights is False


def test_the_cli_offers_exactly_the_trained_methods():
    from n2sr import cli
    from n2sr.nn.objectives import METHODS

    assert set(cli.METHODS) == set(METHODS)


def test_ingest_codec_is_one_of_the_same_choices_everywhere():
    """zstd or lz4 in the dataclass, the schema and the CLI; anything else is refused by each."""
    import typing

    choices = typing.get_args(typing.get_type_hints(IngestConfig)["codec"])
    assert choices == ("zstd", "lz4")
    assert tuple(PROPS["ingest"]["properties"]["codec"]["enum"]) == choices
    assert tuple(_options("ingest")["--codec"].choices) == choices
    assert collect(build_parser().parse_args(["ingest", "a", "b", "--codec", "lz4"]), IngestConfig).codec == "lz4"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ingest", "a", "b", "--codec", "gzip"])
    with pytest.raises(ValueError, match="codec"):
        IngestConfig(codec="gzip")  # type: ignore[arg-type]
