"""Baselines: blind spots are blind, baselines share the training loop (resume, checkpoints),
same-size U-Net denoising tiles exactly, BM3D runs as a step."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile
import torch

from n2sr.cli import build_parser, collect, main
from n2sr.config import DenoiseConfig, ModelConfig, N2SConfig, N2VConfig, TrainConfig
from n2sr.io import checkpoints
from n2sr.nn import objectives
from n2sr.nn.blindspot import n2s_mask, n2v_mask
from n2sr.nn.inference import Engine
from n2sr.nn.model import UNet, from_state, receptive_field
from n2sr.nn.normalize import Normalizer
from n2sr.nn.objectives import objective
from n2sr.steps.train import state_path
from n2sr.steps.train import train_planes as train

TINY = dict(batch_size=4, patch_size=32, val_every=3, checkpoint_every=3, precision="fp32", device="cpu",
            model=ModelConfig(features=8, final_features=16))


def _planes(n=3, shape=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.poisson(50, size=shape).astype(np.uint16) for _ in range(n)]


N2V = dict(box=N2VConfig().box, radius=N2VConfig().radius)


@pytest.mark.parametrize("masking", [lambda x, g: n2v_mask(x, g, **N2V), lambda x, g: n2s_mask(x, g, grid=4)],
                         ids=["n2v", "n2s"])
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
    inp, mask = n2v_mask(x, torch.Generator().manual_seed(0), **N2V)
    assert 0.005 < mask.mean() < 0.015
    assert (inp[mask.bool()] != x[mask.bool()]).all()


def test_n2s_masks_one_grid_phase():
    _, mask = n2s_mask(torch.zeros(2, 1, 16, 16), torch.Generator().manual_seed(0), grid=N2SConfig().grid)
    assert mask[0].sum() == 16 and mask.mean() == 1 / 16


def test_blind_spot_settings_reach_the_masks():
    x = torch.arange(8 * 64 * 64, dtype=torch.float32).reshape(8, 1, 64, 64)
    gen = torch.Generator().manual_seed(0)
    inp, _, mask = objective("n2v", N2VConfig(box=4, radius=1)).make(x, gen)
    assert 0.05 < mask.mean() < 0.075  # ~1/16, not the default 1/100
    # replacements come from the 3x3 window: at most one row and one column away
    ys, xs = np.nonzero(mask[0, 0].numpy())
    src = inp[0, 0].numpy()[ys, xs].astype(np.int64)
    assert (np.abs(src // 64 - ys) <= 1).all() and (np.abs(src % 64 - xs) <= 1).all()
    _, _, mask = objective("n2s", N2SConfig(grid=5)).make(torch.zeros(2, 1, 20, 20), gen)
    assert mask.mean() == 1 / 25
    _, _, mask = objective("n2s").make(torch.zeros(2, 1, 20, 20), gen)
    assert mask.mean() == 1 / 16  # without a config: the published default


def test_train_masks_with_the_configured_settings(tmp_path, monkeypatch):
    seen = []

    def spy(x, gen, *, grid):
        seen.append(grid)
        return n2s_mask(x, gen, grid=grid)

    monkeypatch.setattr(objectives, "n2s_mask", spy)
    train(_planes(), tmp_path / "m.pt", TrainConfig(iterations=1, **TINY), method="n2s", settings=N2SConfig(grid=5),
          progress=False)
    assert seen and set(seen) == {5}
    assert checkpoints.load(tmp_path / "m.pt")["method_config"] == {"grid": 5}


@pytest.mark.parametrize("cls, bad, key", [
    (N2VConfig, dict(box=3, radius=2), "n2v box"),
    (N2VConfig, dict(radius=0), "n2v radius"),
    (N2SConfig, dict(grid=2), "n2s grid"),
])
def test_bad_blind_spot_settings_are_refused_by_name(cls, bad, key):
    with pytest.raises(ValueError, match=f"^{key} must"):
        cls(**bad)


def test_cli_takes_the_blind_spot_settings():
    ns = build_parser().parse_args(["train", "a.zarr", "--out", "m.pt", "--method", "n2v", "--n2v-box", "8",
                                    "--n2v-radius", "3", "--n2s-grid", "6"])
    kwargs = ns.kwargs(ns)
    assert kwargs["settings"] == N2VConfig(box=8, radius=3)  # only the chosen method's settings travel
    assert collect(ns, N2SConfig, prefix="n2s") == N2SConfig(grid=6)


@pytest.mark.parametrize("method, settings, resumes", [
    ("n2v", N2VConfig(box=8), False),
    ("n2v", N2VConfig(), True),
    ("n2sr", None, True),
])
def test_resume_state_depends_on_the_methods_own_settings(tmp_path, caplog, method, settings, resumes):
    train(_planes(), tmp_path / "m.pt", TrainConfig(iterations=3, **TINY), method=method, progress=False)
    caplog.set_level(logging.INFO, logger="n2sr")
    train(_planes(), tmp_path / "m.pt", TrainConfig(iterations=4, **TINY), method=method, settings=settings,
          resume=True, progress=False)
    assert ("resumed at step" in caplog.text) is resumes
    assert ("starting from scratch" in caplog.text) is not resumes


@pytest.mark.parametrize("method", ["n2v", "n2n"])
def test_baseline_resume_equals_uninterrupted(tmp_path, method):
    planes = _planes(4)
    if method == "n2n":
        planes = [np.stack(planes[i:i + 2]) for i in range(3)]
    authors = dict(TINY, recipe="authors")  # a constant rate: a budget of 3 is the first half of one of 6
    full = train(planes, tmp_path / "full.pt", TrainConfig(iterations=6, **authors), method=method, progress=False)
    train(planes, tmp_path / "part.pt", TrainConfig(iterations=3, **authors), method=method, progress=False)
    resumed = train(planes, tmp_path / "part.pt", TrainConfig(iterations=6, **authors), method=method, resume=True,
                    progress=False)
    a, b = (checkpoints.load(state_path(tmp_path / n), require=("step",)) for n in ("full.pt", "part.pt"))
    assert a["step"] == b["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["train_loss"] for r in full.curve] == [r["train_loss"] for r in resumed.curve]
    ckpt = checkpoints.load(tmp_path / "full.pt")
    model = from_state(ckpt["model_config"], ckpt["scale"], ckpt["model"])
    assert ckpt["method"] == method and ckpt["scale"] == 1
    assert model(torch.zeros(1, 1, 20, 30)).shape == (1, 1, 20, 30)


def test_resume_state_of_another_method_is_ignored(tmp_path):
    train(_planes(), tmp_path / "m.pt", TrainConfig(iterations=3, **TINY), method="n2v", progress=False)
    result = train(_planes(), tmp_path / "m.pt", TrainConfig(iterations=3, **TINY), method="n2s", resume=True,
                   progress=False)
    assert len(result.curve) == 1 and checkpoints.load(tmp_path / "m.pt")["method"] == "n2s"


def test_n2n_refuses_single_planes(tmp_path):
    with pytest.raises(ValueError, match=r"n2n trains on arrays of shape \(2, 'Y', 'X'\)"):
        train(_planes(), tmp_path / "m.pt", TrainConfig(**TINY), method="n2n", progress=False)


def test_unet_tiled_equals_whole_plane():
    torch.manual_seed(0)
    net = UNet(1, 1, features=8, final_features=16).eval()
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    rf = receptive_field(ModelConfig(), sr=False)
    plane = np.random.default_rng(0).integers(0, 1000, (40, 300)).astype(np.uint16)
    norm = Normalizer(offset=0.0, scale=1000.0, mode="range")
    exact = dict(device="cpu", precision="fp32", overlap="exact")
    whole, _ = Engine(net, DenoiseConfig(**exact), receptive_field=rf, scale=1, normalizer=norm).denoise_plane(plane)
    tiled, _ = Engine(net, DenoiseConfig(tile_size=64, **exact), receptive_field=rf, scale=1,
                      normalizer=norm).denoise_plane(plane)
    assert whole.shape == plane.shape
    with torch.no_grad():
        direct = net(torch.from_numpy(plane[None, None] / 1000.0).float())[0, 0].numpy() * 1000.0
    np.testing.assert_allclose(whole, direct, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(tiled, whole)
    with pytest.raises(ValueError, match="no 2x super-resolved output"):
        Engine(net, DenoiseConfig(device="cpu"), receptive_field=rf, scale=1, normalizer=norm).denoise_plane(
            plane, return_sr=True)


def test_cli_trains_and_denoises_a_baseline_and_runs_bm3d(tmp_path, capsys):
    rng = np.random.default_rng(0)
    clean = 100.0 + 50.0 * np.sin(np.arange(64) / 6.0)[:, None] * np.ones((1, 64))
    tifffile.imwrite(tmp_path / "stack.tif", (clean + rng.normal(0, 10, (3, 64, 64))).astype(np.float32),
                     photometric="minisblack")
    tifffile.imwrite(tmp_path / "ref.tif", clean.astype(np.float32))
    main(["ingest", str(tmp_path / "stack.tif"), str(tmp_path / "s.zarr")])
    opts = ["--iterations", "2", "--batch-size", "2", "--patch-size", "32", "--features", "8", "--precision", "fp32"]
    assert main(["train", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "m.pt"), "--method", "n2n", *opts]) == 0
    assert checkpoints.load(tmp_path / "m.pt")["sources"][0].endswith("s.zarr[0,1]")
    assert main(["denoise", str(tmp_path / "m.pt"), str(tmp_path / "s.zarr"), str(tmp_path / "d.zarr"),
                 "--captures", "0,2", "--tile-size", "32"]) == 0
    assert main(["denoise", str(tmp_path / "m.pt"), str(tmp_path / "s.zarr"), str(tmp_path / "x.zarr"),
                 "--sr", str(tmp_path / "sr.zarr")]) == 1
    assert "drop --sr" in capsys.readouterr().err
    assert main(["bm3d", str(tmp_path / "s.zarr"), str(tmp_path / "b.zarr"), "--captures", "1"]) == 0
    assert main(["evaluate", "--reference", str(tmp_path / "ref.tif"), str(tmp_path / "b.zarr"),
                 str(tmp_path / "d.zarr"), "--data-range", "255"]) == 0
