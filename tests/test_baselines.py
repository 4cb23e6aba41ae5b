"""Baselines: blind spots are blind, baselines share the training loop (resume, checkpoints),
same-size U-Net denoising tiles exactly, BM3D runs as a step."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile
import torch

from n2sr import checkpoint, objectives
from n2sr.blindspot import n2s_mask, n2v_mask
from n2sr.cli import build_parser, collect, main
from n2sr.denoise import DenoiseConfig, denoise_plane
from n2sr.model import ModelConfig, UNet, receptive_field
from n2sr.normalize import Normalizer
from n2sr.objectives import objective
from n2sr.train import TrainConfig, state_path, train

TINY = dict(batch_size=4, patch_size=32, val_every=3, checkpoint_every=3, precision="fp32", device="cpu",
            model=ModelConfig(features=8, final_features=16))


def _planes(n=3, shape=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.poisson(50, size=shape).astype(np.uint16) for _ in range(n)]


@pytest.mark.parametrize("masking", [n2v_mask, n2s_mask])
def test_prediction_at_a_blind_spot_never_depends_on_its_own_value(masking):
    """d(prediction at masked pixels) / d(original value there) == 0, through replacement and network."""
    torch.manual_seed(0)
    net = UNet(1, 1, features=8, final_features=16).eval()
    x = torch.rand(4, 1, 40, 40, requires_grad=True)
    inp, mask = masking(x, torch.Generator().manual_seed(3))
    assert mask.sum() > 0 and torch.equal(mask, mask.detach().round())
    (grad,) = torch.autograd.grad((net(inp) * mask).sum(), x)
    assert grad[mask.bool()].abs().max() == 0
    assert grad[~mask.bool()].abs().max() > 0  # the rest of the image is seen
    unmasked = ~mask.bool()
    assert torch.equal(inp[unmasked], x[unmasked])  # only blind spots are replaced


def test_n2v_masks_about_one_percent_and_never_copies_the_centre():
    x = torch.arange(8 * 64 * 64, dtype=torch.float32).reshape(8, 1, 64, 64)  # all values distinct
    inp, mask = n2v_mask(x, torch.Generator().manual_seed(0))
    assert 0.005 < mask.mean() < 0.015
    assert (inp[mask.bool()] != x[mask.bool()]).all()


def test_n2s_masks_one_grid_phase():
    _, mask = n2s_mask(torch.zeros(2, 1, 16, 16), torch.Generator().manual_seed(0))
    assert mask[0].sum() == 16 and mask.mean() == 1 / 16


def test_blind_spot_settings_reach_the_masks():
    x = torch.arange(8 * 64 * 64, dtype=torch.float32).reshape(8, 1, 64, 64)
    gen = torch.Generator().manual_seed(0)
    inp, _, mask = objective("n2v", TrainConfig(n2v_box=4, n2v_radius=1)).make(x, gen)
    assert 0.05 < mask.mean() < 0.075  # ~1/16, not the default 1/100
    # replacements come from the 3x3 window: at most one row and one column away
    ys, xs = np.nonzero(mask[0, 0].numpy())
    src = inp[0, 0].numpy()[ys, xs].astype(np.int64)
    assert (np.abs(src // 64 - ys) <= 1).all() and (np.abs(src % 64 - xs) <= 1).all()
    _, _, mask = objective("n2s", TrainConfig(n2s_grid=5)).make(torch.zeros(2, 1, 20, 20), gen)
    assert mask.mean() == 1 / 25
    _, _, mask = objective("n2s").make(torch.zeros(2, 1, 20, 20), gen)
    assert mask.mean() == 1 / 16  # without a config: the published default


def test_train_masks_with_the_configured_settings(tmp_path, monkeypatch):
    seen = []

    def spy(x, gen, *, grid):
        seen.append(grid)
        return n2s_mask(x, gen, grid=grid)

    monkeypatch.setattr(objectives, "n2s_mask", spy)
    train(_planes(), TrainConfig(iterations=1, n2s_grid=5, **TINY), tmp_path / "m.pt", method="n2s", progress=False)
    assert seen and set(seen) == {5}
    assert checkpoint.load(tmp_path / "m.pt")["train_config"]["n2s_grid"] == 5


@pytest.mark.parametrize("bad, key", [
    (dict(n2v_box=3, n2v_radius=2), "n2v_box"),
    (dict(n2v_radius=0), "n2v_radius"),
    (dict(n2s_grid=2), "n2s_grid"),
])
def test_bad_blind_spot_settings_are_refused_by_name(bad, key):
    with pytest.raises(ValueError, match=f"^{key} must"):
        TrainConfig(**bad)


def test_cli_takes_the_blind_spot_settings():
    ns = build_parser().parse_args(["train", "a.zarr", "--out", "m.pt", "--method", "n2v", "--n2v-box", "8",
                                    "--n2v-radius", "3", "--n2s-grid", "6"])
    cfg = collect(ns, TrainConfig, model=collect(ns, ModelConfig))
    assert (cfg.n2v_box, cfg.n2v_radius, cfg.n2s_grid) == (8, 3, 6)


def test_train_config_recorded_before_the_blind_spot_settings_loads_with_defaults():
    old = {k: v for k, v in TrainConfig(seed=5).__dict__.items() if not k.startswith(("n2v_", "n2s_"))}
    old["model"] = old["model"].__dict__
    cfg = TrainConfig.from_dict(old)
    assert cfg.seed == 5 and (cfg.n2v_box, cfg.n2v_radius, cfg.n2s_grid) == (10, 2, 4)


@pytest.mark.parametrize("method, change, resumes", [
    ("n2v", dict(n2v_box=8), False),
    ("n2v", dict(n2s_grid=5), True),  # another method's setting
    ("n2sr", dict(n2v_radius=3), True),
])
def test_resume_state_depends_on_the_methods_own_settings(tmp_path, caplog, method, change, resumes):
    train(_planes(), TrainConfig(iterations=3, **TINY), tmp_path / "m.pt", method=method, progress=False)
    caplog.set_level(logging.INFO, logger="n2sr.train")
    train(_planes(), TrainConfig(iterations=4, **change, **TINY), tmp_path / "m.pt", method=method, resume=True,
          progress=False)
    assert ("resumed from" in caplog.text) is resumes
    assert ("starting from scratch" in caplog.text) is not resumes


@pytest.mark.parametrize("method", ["n2v", "n2n"])
def test_baseline_resume_equals_uninterrupted(tmp_path, method):
    planes = _planes(4)
    if method == "n2n":
        planes = [np.stack(planes[i:i + 2]) for i in range(3)]
    full = train(planes, TrainConfig(iterations=6, **TINY), tmp_path / "full.pt", method=method, progress=False)
    train(planes, TrainConfig(iterations=3, **TINY), tmp_path / "part.pt", method=method, progress=False)
    resumed = train(planes, TrainConfig(iterations=6, **TINY), tmp_path / "part.pt", method=method, resume=True,
                    progress=False)
    a, b = (checkpoint.load(state_path(tmp_path / n)) for n in ("full.pt", "part.pt"))
    assert a["step"] == b["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["train_loss"] for r in full.curve] == [r["train_loss"] for r in resumed.curve]
    model, _, ckpt = checkpoint.load_model(tmp_path / "full.pt", torch.device("cpu"))
    assert ckpt["method"] == method and ckpt["scale"] == 1
    assert model(torch.zeros(1, 1, 20, 30)).shape == (1, 1, 20, 30)


def test_resume_state_of_another_method_is_ignored(tmp_path):
    train(_planes(), TrainConfig(iterations=3, **TINY), tmp_path / "m.pt", method="n2v", progress=False)
    result = train(_planes(), TrainConfig(iterations=3, **TINY), tmp_path / "m.pt", method="n2s", resume=True,
                   progress=False)
    assert len(result.curve) == 1 and checkpoint.load(tmp_path / "m.pt")["method"] == "n2s"


def test_n2n_refuses_single_planes(tmp_path):
    with pytest.raises(ValueError, match=r"n2n trains on arrays of shape \(2, 'Y', 'X'\)"):
        train(_planes(), TrainConfig(**TINY), tmp_path / "m.pt", method="n2n", progress=False)


def test_unet_tiled_equals_whole_plane():
    torch.manual_seed(0)
    net = UNet(1, 1, features=8, final_features=16).eval()
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    rf = receptive_field(ModelConfig(), sr=False)
    plane = np.random.default_rng(0).integers(0, 1000, (40, 300)).astype(np.uint16)
    norm = Normalizer(offset=0.0, scale=1000.0, mode="range")
    whole, _ = denoise_plane(net, plane, norm, DenoiseConfig(device="cpu", precision="fp32"), receptive_field=rf,
                             scale=1)
    tiled, _ = denoise_plane(net, plane, norm, DenoiseConfig(tile_size=64, device="cpu", precision="fp32"),
                             receptive_field=rf, scale=1)
    assert whole.shape == plane.shape
    with torch.no_grad():
        direct = net(torch.from_numpy(plane[None, None] / 1000.0).float())[0, 0].numpy() * 1000.0
    np.testing.assert_allclose(whole, direct, rtol=0, atol=1e-3)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="no 2x super-resolved output"):
        denoise_plane(net, plane, norm, DenoiseConfig(device="cpu"), receptive_field=rf, scale=1, return_sr=True)


def test_cli_trains_and_denoises_a_baseline_and_runs_bm3d(tmp_path, capsys):
    rng = np.random.default_rng(0)
    clean = 100.0 + 50.0 * np.sin(np.arange(64) / 6.0)[:, None] * np.ones((1, 64))
    tifffile.imwrite(tmp_path / "stack.tif", (clean + rng.normal(0, 10, (3, 64, 64))).astype(np.float32),
                     photometric="minisblack")
    tifffile.imwrite(tmp_path / "ref.tif", clean.astype(np.float32))
    main(["ingest", str(tmp_path / "stack.tif"), str(tmp_path / "s.zarr")])
    opts = ["--iterations", "2", "--batch-size", "2", "--patch-size", "32", "--features", "8", "--precision", "fp32"]
    assert main(["train", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "m.pt"), "--method", "n2n", *opts]) == 0
    assert checkpoint.load(tmp_path / "m.pt")["sources"][0].endswith("s.zarr[0,1]")
    assert main(["denoise", str(tmp_path / "m.pt"), str(tmp_path / "s.zarr"), str(tmp_path / "d.zarr"),
                 "--captures", "0,2", "--tile-size", "32"]) == 0
    assert main(["denoise", str(tmp_path / "m.pt"), str(tmp_path / "s.zarr"), str(tmp_path / "x.zarr"),
                 "--sr", str(tmp_path / "sr.zarr")]) == 1
    assert "drop --sr" in capsys.readouterr().err
    assert main(["bm3d", str(tmp_path / "s.zarr"), str(tmp_path / "b.zarr"), "--captures", "1"]) == 0
    assert main(["evaluate", "--reference", str(tmp_path / "ref.tif"), str(tmp_path / "b.zarr"),
                 str(tmp_path / "d.zarr"), "--data-range", "255"]) == 0
