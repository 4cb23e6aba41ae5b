import dataclasses
import hashlib
import math

import numpy as np
import pytest
import torch

from n2sr.config import RECIPES, ModelConfig, TrainConfig
from n2sr.errors import InputError
from n2sr.io import checkpoints
from n2sr.nn.model import from_state
from n2sr.nn.schedule import budget_spent, lr_factor
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


class _Killed(Exception):
    pass


def test_fast_recipe_resumes_exactly_with_its_schedule_and_average(tmp_path, monkeypatch):
    planes, cfg = _planes(), TrainConfig(recipe="fast", iterations=6, **TINY)
    train(planes, tmp_path / "full.pt", cfg, progress=False)
    save = checkpoints.save

    def killed_after_step_3(path, obj):  # the job dies right after writing its state at step 3
        save(path, obj)
        if obj.get("step") == 3:
            raise _Killed

    monkeypatch.setattr(checkpoints, "save", killed_after_step_3)
    with pytest.raises(_Killed):
        train(planes, tmp_path / "part.pt", cfg, progress=False)
    monkeypatch.undo()
    train(planes, tmp_path / "part.pt", cfg, resume=True, progress=False)
    a = checkpoints.load(state_path(tmp_path / "full.pt"), require=("step",))
    b = checkpoints.load(state_path(tmp_path / "part.pt"), require=("step",))
    assert a["step"] == b["step"] == 6 and a["average"]["updates"] == b["average"]["updates"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
        assert torch.equal(a["average"]["model"][k], b["average"]["model"][k]), k
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]


def test_saved_weights_are_the_average_not_the_last_step(tmp_path):
    cfg = TrainConfig(recipe="fast", iterations=4, ema=0.9, **dict(TINY, val_every=100))
    train(_planes(), tmp_path / "m.pt", dataclasses.replace(cfg, val_fraction=0), progress=False)
    saved = checkpoints.load(tmp_path / "m.pt")
    state = checkpoints.load(state_path(tmp_path / "m.pt"), require=("step",))
    assert saved["recipe"] == "fast" and saved["train_config"]["lr"] == RECIPES["fast"]["lr"]
    assert all(torch.equal(saved["model"][k], state["average"]["model"][k]) for k in saved["model"])
    assert not all(torch.equal(saved["model"][k], state["model"][k]) for k in saved["model"])


def test_authors_recipe_keeps_a_constant_rate_and_no_average(tmp_path):
    train(_planes(), tmp_path / "m.pt", TrainConfig(recipe="authors", iterations=3, **TINY), progress=False)
    state = checkpoints.load(state_path(tmp_path / "m.pt"), require=("step",))
    assert state["average"] is None and state["optimizer"]["param_groups"][0]["lr"] == 1e-4
    assert checkpoints.load(tmp_path / "m.pt")["train_config"]["batch_size"] == TINY["batch_size"]


@pytest.mark.parametrize("iterations", [10, 30])
def test_the_schedule_ends_at_the_budget(tmp_path, iterations):
    """Whatever the budget, the last step runs at the end of the cosine (a rate near zero)."""
    cfg = TrainConfig(recipe="fast", iterations=iterations, lr=1e-3, warmup=0.1, **TINY)
    train(_planes(), tmp_path / "m.pt", cfg, progress=False)
    last = checkpoints.load(state_path(tmp_path / "m.pt"), require=("step",))["optimizer"]["param_groups"][0]["lr"]
    assert last == pytest.approx(1e-3 * lr_factor((iterations - 0.5) / iterations, 0.1))  # the last step's middle
    assert last < 0.1 * 1e-3


def test_a_step_capped_run_with_a_time_budget_is_reproducible(tmp_path):
    """The clock never reaches the rates while the step cap binds first (also at step 0), so two
    runs with the same seed give the same weights bit for bit."""
    cfg = TrainConfig(recipe="fast", iterations=6, minutes=30, **TINY)
    a, b = (train(_planes(), tmp_path / f"{n}.pt", cfg, progress=False) for n in "ab")
    assert a.steps == b.steps == 6
    assert all(torch.equal(a.best_state[k], b.best_state[k]) for k in a.best_state)


def test_schedule_progress_is_the_larger_fraction_of_the_budget():
    assert budget_spent(10, 100, 30.0, None) == pytest.approx(0.1)
    assert budget_spent(10, 100, 30.0, 1.0) == pytest.approx(0.5)  # half a minute of one
    assert budget_spent(90, 100, 30.0, 1.0) == pytest.approx(0.9)
    assert budget_spent(1, 100, 120.0, 1.0) == 1.0
    assert lr_factor(0.0, 0.1) == 0.0 and lr_factor(0.05, 0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1) == 1.0 and lr_factor(1.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    factors = [lr_factor(d / 10, 0.1) for d in range(1, 11)]
    assert factors == sorted(factors, reverse=True)


def test_warm_start_begins_at_the_given_weights_and_records_their_hash(tmp_path):
    planes = _planes()
    train(planes, tmp_path / "generic model.pt", TrainConfig(recipe="authors", iterations=3, **TINY), progress=False)
    given = checkpoints.load(tmp_path / "generic model.pt")
    cfg = TrainConfig(recipe="fast", iterations=1, lr=1e-9, val_fraction=0, init=str(tmp_path / "generic model.pt"),
                      **TINY)
    train(_planes(seed=1), tmp_path / "tuned.pt", cfg, progress=False)
    tuned = checkpoints.load(tmp_path / "tuned.pt")
    assert tuned["init"] == {"path": str(tmp_path / "generic model.pt"),
                             "sha256": hashlib.sha256((tmp_path / "generic model.pt").read_bytes()).hexdigest()}
    for k, v in given["model"].items():
        assert torch.allclose(tuned["model"][k], v, atol=1e-6), k
    scratch = TrainConfig(recipe="fast", iterations=1, lr=1e-9, val_fraction=0, **TINY)
    other = train(_planes(seed=1), tmp_path / "scratch.pt", scratch, progress=False).best_state
    assert not all(torch.allclose(other[k], v, atol=1e-6) for k, v in given["model"].items())


def test_warm_start_from_another_architecture_is_refused_naming_the_file(tmp_path):
    train(_planes(), tmp_path / "small.pt", TrainConfig(iterations=1, **TINY), progress=False)
    wider = dict(TINY, model=ModelConfig(features=12))
    with pytest.raises(InputError, match="small.pt.*features"):
        train(_planes(), tmp_path / "m.pt", TrainConfig(iterations=1, init=str(tmp_path / "small.pt"), **wider),
              progress=False)
