import math

import numpy as np
import pytest
import torch

from n2sr.config import ModelConfig, TrainConfig
from n2sr.io import checkpoints
from n2sr.nn.model import from_state
from n2sr.nn.training import split_validation
from n2sr.steps.train import state_path
from n2sr.steps.train import train_planes as train

TINY = dict(batch_size=4, patch_size=32, val_every=3, checkpoint_every=3, precision="fp32", device="cpu",
            model=ModelConfig(features=8))


def _planes(n=3, shape=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.poisson(50, size=shape).astype(np.uint16) for _ in range(n)]


def test_resume_after_k_steps_equals_uninterrupted(tmp_path):
    # a constant learning rate: a run with a budget of 3 is the first half of one with 6
    planes, authors = _planes(), dict(TINY, recipe="authors")
    full = train(planes, tmp_path / "full.pt", TrainConfig(iterations=6, **authors), progress=False)
    train(planes, tmp_path / "part.pt", TrainConfig(iterations=3, **authors), progress=False)
    resumed = train(planes, tmp_path / "part.pt", TrainConfig(iterations=6, **authors), resume=True, progress=False)
    a = checkpoints.load(state_path(tmp_path / "full.pt"), require=("step",))
    b = checkpoints.load(state_path(tmp_path / "part.pt"), require=("step",))
    assert a["step"] == b["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["train_loss"] for r in full.curve] == [r["train_loss"] for r in resumed.curve]
    assert resumed.steps == 6


def test_resume_ignores_a_state_of_other_settings(tmp_path):
    planes = _planes()
    train(planes, tmp_path / "m.pt", TrainConfig(iterations=3, **TINY), progress=False)
    other = dict(TINY, patch_size=16)
    result = train(planes, tmp_path / "m.pt", TrainConfig(iterations=3, **other), resume=True, progress=False)
    assert result.curve[0]["step"] == 3 and len(result.curve) == 1  # started again from step 0


def test_checkpoint_records_what_inference_needs(tmp_path):
    planes = _planes()
    train(planes, tmp_path / "m.pt", TrainConfig(iterations=3, seed=11, **TINY), progress=False, sources=["a.tif[0]"])
    ckpt = checkpoints.load(tmp_path / "m.pt")
    assert ckpt["normalizer"]["mode"] == "range" and ckpt["normalizer"]["scale"] == max(p.max() for p in planes)
    assert ckpt["train_config"]["seed"] == 11 and ckpt["model_config"]["features"] == 8
    assert ckpt["sources"] == ["a.tif[0]"] and "torch" in ckpt["versions"]
    model = from_state(ckpt["model_config"], ckpt["scale"], ckpt["model"])
    assert model(torch.zeros(1, 1, 20, 30)).shape == (1, 1, 40, 60)


def test_validation_picks_the_lowest_loss(tmp_path):
    result = train(_planes(), tmp_path / "m.pt", TrainConfig(iterations=9, **TINY), progress=False)
    vals = [r["val_loss"] for r in result.curve]
    assert all(math.isfinite(v) for v in vals)
    assert result.best_val == min(vals)
    assert result.best_step == result.curve[int(np.argmin(vals))]["step"]


def test_minutes_budget_stops_training(tmp_path):
    result = train(_planes(), tmp_path / "m.pt", TrainConfig(iterations=10**6, minutes=0.01, **TINY), progress=False)
    assert 1 <= result.steps < 10**6
    assert checkpoints.load(tmp_path / "m.pt")["steps"] == result.steps


def test_split_validation_holds_out_planes_or_strips():
    cfg = TrainConfig(patch_size=32, val_fraction=0.25)
    train_p, val_p = split_validation([np.zeros((64, 64))] * 8, cfg)
    assert len(train_p) == 6 and len(val_p) == 2
    train_p, val_p = split_validation([np.zeros((128, 64))], cfg)
    assert train_p[0].shape == (96, 64) and val_p[0].shape == (32, 64)
    assert split_validation([np.zeros((40, 40))], cfg)[1] == []


def test_small_plane_is_refused_with_its_name(tmp_path):
    with pytest.raises(ValueError, match="tiny.tif.*smaller than the training patch"):
        train([np.zeros((16, 16))], tmp_path / "m.pt", TrainConfig(**TINY), sources=["tiny.tif"], progress=False)
