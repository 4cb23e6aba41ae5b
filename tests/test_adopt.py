"""Reusing a model trained before (`n2sr adopt`, config `models`): a checkpoint that fits this
run is recorded and left untouched; one that does not is refused with one line naming it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from n2sr.config import ModelConfig
from n2sr.errors import InputError
from n2sr.io import checkpoints
from n2sr.nn.model import build_model
from n2sr.steps.adopt import adopt

NET = {"features": 8, "final_features": 16, "unet_out_channels": 8, "sr_channels": 8}


def checkpoint(d: Path, method: str = "n2sr", **changes) -> Path:
    scale = 2 if method == "n2sr" else 1
    model = build_model(ModelConfig(**NET), sr=scale == 2)
    state = {"method": method, "scale": scale, "model_config": NET, "model": model.state_dict(),
             "normalizer": {"offset": 0.0, "scale": 255.0, "mode": "range"},
             "versions": {"n2sr": "0.1.0"}, "steps": 10, **changes}
    path = d / f"{method}.pt"
    checkpoints.save(path, state)
    return path


def test_a_fitting_checkpoint_is_recorded_with_its_hash_and_left_untouched(tmp_path):
    path = checkpoint(tmp_path)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    record = adopt(path, tmp_path / "run/adopted.json", method="n2sr", normalization="range")
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    written = json.loads((tmp_path / "run/adopted.json").read_text())
    assert written == json.loads(json.dumps(record, default=str))
    assert written["sha256"] == hashlib.sha256(before[0]).hexdigest()
    assert written["source"] == str(path.resolve()) and written["method"] == "n2sr" and written["steps"] == 10


@pytest.mark.parametrize("method, changes, expected, problem", [
    ("n2v", {}, "n2sr", "is a n2v model; this configuration's n2sr model must be one"),
    ("n2sr", {"normalizer": {"offset": 0.0, "scale": 1.0, "mode": "meanstd"}}, "n2sr",
     "was trained with normalization meanstd; this run's train.normalization is range"),
    ("n2sr", {"versions": {"n2sr": "9.0.0"}}, "n2sr", "was written by n2sr 9.0.0, newer than this n2sr"),
    ("n2sr", {"model_config": {**NET, "features": 16}}, "n2sr", "damaged or foreign checkpoint: weights do not fit"),
    ("n2v", {"scale": 2}, "n2v", "has output scale 2, a n2v network has 1"),
])
def test_a_mismatch_is_one_line_naming_the_file_and_nothing_is_written(tmp_path, method, changes, expected, problem):
    path = checkpoint(tmp_path, method, **changes)
    out = tmp_path / "run/adopted.json"
    with pytest.raises(InputError) as info:
        adopt(path, out, method=expected, normalization="range")
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()
