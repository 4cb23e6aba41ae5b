"""The Snakemake workflow: lint, dry runs of the shipped configs, config and sample-sheet errors,
and (slow) a whole run on a tiny synthetic archive."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from n2sr import samples as smp
from n2sr.denoise import DenoiseConfig
from n2sr.model import ModelConfig
from n2sr.train import TrainConfig
from pipeline_helpers import tiny_synthetic_config

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
CONFIG_SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
SAMPLE_SCHEMA = yaml.safe_load((REPO / "workflow/schemas/samples.schema.yaml").read_text())
FMD = (REPO / "../shared/data/fmd").resolve()


def snakemake(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the repository's workflow; stdout and stderr together in `.stdout`."""
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)


# -- shipped configs -------------------------------------------------------------------------

CONFIGS = [
    pytest.param([], id="config.yaml"),
    pytest.param(["--configfile", "config/fmd.yaml"], id="fmd.yaml",
                 marks=pytest.mark.skipif(not FMD.is_dir(), reason=f"FMD data not at {FMD}")),
    pytest.param(["--configfile", "config/baselines.yaml"], id="baselines.yaml"),
]


@pytest.mark.parametrize("args", CONFIGS)
def test_lint_reports_nothing(args):
    run = snakemake("--lint", *args)
    assert run.returncode == 0, run.stdout
    assert "Congratulations, your workflow is in a good condition" in run.stdout, run.stdout


@pytest.mark.parametrize("args", CONFIGS)
def test_dry_run(args):
    run = snakemake("-n", "--nolock", *args)
    assert run.returncode == 0, run.stdout
    for rule in ("ingest", "reference", "train", "denoise", "evaluate", "evaluate_noisy", "summarize"):
        assert f"rule {rule}:" in run.stdout, run.stdout


def test_fmd_sets_every_key_of_the_default():
    """--configfile is merged over config/config.yaml: a key fmd.yaml omits would leak the demo's value."""
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    fmd = yaml.safe_load((REPO / "config/fmd.yaml").read_text())
    assert set(default) <= set(fmd)
    for section in ("train", "denoise", "evaluate"):
        assert set(default[section]) <= set(fmd[section]), section


def test_schema_matches_the_config_dataclasses():
    """Config keys are the dataclass fields (and so the CLI options), with the same defaults."""
    props = CONFIG_SCHEMA["properties"]
    expected = {f.name: f.default for cls in (TrainConfig, ModelConfig) for f in dataclasses.fields(cls)
                if f.name != "model"}
    assert {k: v["default"] for k, v in props["train"]["properties"].items()} == expected
    denoise = {k: v["default"] for k, v in props["denoise"]["properties"].items()}
    workflow_only = {"write_sr", "write_tiff"}
    assert {k: v for k, v in denoise.items() if k not in workflow_only} == {
        f.name: f.default for f in dataclasses.fields(DenoiseConfig)}


def test_every_schema_key_is_described():
    def walk(schema: dict, path: str):
        for key, sub in schema.get("properties", {}).items():
            assert sub.get("description"), f"{path}{key} has no description"
            yield from walk(sub, f"{path}{key}.")
            yield from walk(sub.get("then", {}), f"{path}{key}.")
            extra = sub.get("additionalProperties")
            if isinstance(extra, dict):
                yield from walk(extra, f"{path}{key}.*.")
        yield path

    list(walk(CONFIG_SCHEMA, ""))
    list(walk(SAMPLE_SCHEMA, ""))


# -- config errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("override, names", [
    ({"train": {"iterationz": 5}}, ["iterationz"]),
    ({"train": {"iterations": "many"}}, ["iterations", "integer"]),
    ({"denoise": {"tile_size": 100}}, ["tile_size", "multiple of 32"]),
    ({"resolution": 2}, ["resolution"]),
])
def test_bad_config_fails_naming_the_key(tmp_path, override, names):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(override))
    run = snakemake("-n", "--nolock", "--configfile", str(path))
    assert run.returncode != 0
    for name in names:
        assert name in run.stdout, run.stdout


def test_sheet_row_naming_a_missing_file_fails_naming_the_row(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("configuration\tfov\traw\tsplit\n"
                     f"a\t1\t{tmp_path}\ttrain\n"
                     f"a\t2\t{tmp_path / 'nowhere.tif'}\ttest\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"samples": str(sheet), "synthetic": None}))
    run = snakemake("-n", "--nolock", "--configfile", str(config))
    assert run.returncode != 0
    assert f"{sheet} line 3: raw '{tmp_path / 'nowhere.tif'}' does not exist" in run.stdout, run.stdout


# -- sample table ----------------------------------------------------------------------------

def write_sheet(tmp_path: Path, rows: list[str], header: str = "configuration\tfov\traw\treference\tsplit") -> Path:
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("\n".join([header, *rows]) + "\n")
    return sheet


def table(sheet: Path, produced=()) -> pd.DataFrame:
    return smp.check_rows(smp.read_sheet(sheet), SAMPLE_SCHEMA, produced)


def test_sheet_rows_get_defaults_and_index(tmp_path):
    (tmp_path / "a.tif").touch()
    sheet = write_sheet(tmp_path, [f"A\t01\t{tmp_path / 'a.tif'}"], header="configuration\tfov\traw")
    t = table(sheet)
    assert t.loc[("A", "01")].to_dict() == {"configuration": "A", "fov": "01", "raw": str(tmp_path / "a.tif"),
                                            "reference": "", "split": "both"}


@pytest.mark.parametrize("row, message", [
    ("A\t1\t{d}\t\tlater", "line 2: column 'split': 'later' is not one of"),
    ("A\t1\t{d}\t{d}/ref.png\ttest", "line 2: reference '{d}/ref.png' does not exist"),
    ("A\tx/y\t{d}\t\ttest", "line 2: column 'fov': 'x/y' does not match"),
    ("A\t1\t\t\ttest", "line 2: 'raw' is a required property"),
])
def test_bad_row_is_named(tmp_path, row, message):
    sheet = write_sheet(tmp_path, [row.format(d=tmp_path)])
    with pytest.raises(smp.SampleError) as err:
        table(sheet)
    assert message.format(d=tmp_path) in str(err.value)


def test_unknown_column_is_named(tmp_path):
    sheet = write_sheet(tmp_path, [f"A\t1\t{tmp_path}\t\tboth\tx"],
                        header="configuration\tfov\traw\treference\tsplit\tobjective")
    with pytest.raises(smp.SampleError, match="line 2: .*'objective' was unexpected"):
        table(sheet)


def test_duplicate_fov_names_both_rows(tmp_path):
    sheet = write_sheet(tmp_path, [f"A\t1\t{tmp_path}\t\ttrain", f"A\t1\t{tmp_path}\t\ttest"])
    with pytest.raises(smp.SampleError, match=r"line 3: configuration A FOV 1 is already given by .* line 2"):
        table(sheet)


def test_test_fovs_need_a_train_fov(tmp_path):
    sheet = write_sheet(tmp_path, [f"A\t1\t{tmp_path}\t\ttest"])
    with pytest.raises(smp.SampleError, match="configuration A has test FOVs but no FOV with split train or both"):
        table(sheet)


def test_paths_inside_a_produced_folder_need_not_exist(tmp_path):
    sheet = write_sheet(tmp_path, [f"A\t1\t{tmp_path / 'archive/A/raw/1'}\t\tboth"])
    assert len(table(sheet, produced=[tmp_path / "archive"])) == 1


def test_exactly_one_sample_source():
    with pytest.raises(smp.SampleError, match="exactly one of 'samples'"):
        smp.sample_table({"samples": None, "archive": None, "synthetic": None}, SAMPLE_SCHEMA)


def test_discover_fmd_layout(tmp_path):
    for fov in ("1", "2", "10"):
        (tmp_path / "Conf/raw" / fov).mkdir(parents=True)
        (tmp_path / "Conf/gt" / fov).mkdir(parents=True)
        (tmp_path / "Conf/gt" / fov / "avg50.png").touch()
    archive = {"root": str(tmp_path), "reference": "{configuration}/gt/{fov}/avg50.png",
               "configurations": {"Conf": {"train_fovs": [1, 2], "test_fovs": [2, 10]}}}
    t = smp.check_rows(smp.discover(archive), SAMPLE_SCHEMA)
    assert t["split"].to_dict() == {("Conf", "1"): "train", ("Conf", "10"): "test", ("Conf", "2"): "both"}
    assert t.loc[("Conf", "10"), "reference"] == str(tmp_path / "Conf/gt/10/avg50.png")

    archive["configurations"]["Conf"]["test_fovs"] = [19]
    with pytest.raises(smp.SampleError, match=r"configuration Conf FOV 19: no folder .*; FOVs present: 1, 2, 10"):
        smp.discover(archive)


# -- end to end ------------------------------------------------------------------------------

METHODS = ("n2sr", "bm3d", "n2v", "n2s", "n2n")


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path):
    """Tiny archive in folders whose names need quoting; every method's denoised PSNR must beat noisy PSNR."""
    work = tmp_path / "run dir"
    work.mkdir()
    config = tiny_synthetic_config(work, "archive 'demo'")
    config["methods"] = list(METHODS)
    config["train"].update(iterations=150, minutes=None, patch_size=32, val_every=50, checkpoint_every=50)
    config["denoise"].update(tile_size=32, write_sr=True, write_tiff=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config))

    run = snakemake("--cores", "2", "--configfile", "config.yaml", "--directory", str(work), cwd=work, timeout=900)
    assert run.returncode == 0, run.stdout

    results = work / "results"
    for path in ("models/demo/model.pt", "models/demo/curve.csv", "models/demo/curve.png",
                 "denoised/n2sr/demo/2.zarr", "denoised/n2sr/demo/2.sr.zarr", "denoised/n2sr/demo/2.tif",
                 "reports/table.csv", "reports/table_fixed.csv", "reports/demo_summary.csv",
                 *(f"models/demo/{m}/{f}" for m in ("n2v", "n2s", "n2n") for f in ("model.pt", "curve.png")),
                 *(f"denoised/{m}/demo/2.{ext}" for m in METHODS for ext in ("zarr", "tif"))):
        assert (results / path).exists(), path
    assert not (results / "denoised/n2v/demo/2.sr.zarr").exists()  # only n2sr has a 2x output
    per_image = pd.concat(pd.read_csv(results / f"metrics/{m}/demo/2.csv") for m in ("noisy", *METHODS))
    assert {"configuration", "fov", "image", "method", "psnr", "ssim", "psnr_per_image",
            "ssim_per_image"} <= set(per_image.columns)
    assert sorted(per_image["image"]) == ["2.zarr[0]"] * 6 + ["2.zarr[2]"] * 6
    summary = pd.read_csv(results / "reports/summary.csv").set_index("method")
    assert {"configuration", "n", "psnr_mean", "psnr_std", "ssim_mean", "psnr_per_image_mean"} <= set(summary.columns)
    print(summary[["psnr_mean", "ssim_mean", "psnr_per_image_mean", "ssim_per_image_mean"]].to_string())
    for method in METHODS:
        assert summary.loc[method, "psnr_mean"] > summary.loc["noisy", "psnr_mean"], summary
    table = pd.read_csv(results / "reports/table_fixed.csv", keep_default_na=False)
    assert list(table.columns) == ["configuration", "convention", "n", "noisy", *METHODS]
    assert table.loc[0, "n"] == 2 and table.loc[0, "convention"] == "fixed"

    rerun = snakemake("-n", "--configfile", "config.yaml", "--directory", str(work), cwd=work)
    assert "Nothing to be done" in rerun.stdout, rerun.stdout
