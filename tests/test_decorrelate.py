"""Spatially correlated noise (issue 13, item 3): the generator, the autocorrelation measures, the
stride choice, the pixel-shuffle + 2x2 sub-sampler, inference on PD sub-images, and the stride
recorded in a checkpoint and honoured by `n2sr denoise`."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from scipy import ndimage

from n2sr.config import DenoiseConfig, ModelConfig, TrainConfig
from n2sr.correlation import Autocorrelation, choose_stride, estimate_autocorrelation, measured_kernel, noise_autocorrelation
from n2sr.cli import main
from n2sr.errors import InputError
from n2sr.io import checkpoints, omezarr
from n2sr.nn.decorrelate import Decorrelated, merge, random_phase, resolve_stride, split
from n2sr.nn.inference import Engine
from n2sr.nn.normalize import Normalizer
from n2sr.nn.objectives import objective
from n2sr.nn.subsample import subsample
from n2sr.noise import correlated_poisson_gaussian, correlation_kernel, paper_noise_model, poisson_gaussian
from n2sr.steps.add_noise import add_noise
from n2sr.steps.denoise import denoise
from n2sr.steps.train import train_planes
from n2sr.synthetic import clean_image

FLAT = np.full((384, 384), 100.0)
MODEL = paper_noise_model(30, 2)


def noisy(rho: float, seed: int = 0, clean: np.ndarray = FLAT) -> np.ndarray:
    return correlated_poisson_gaussian(clean, MODEL, rho, np.random.default_rng(seed))


@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_kernel_gives_the_stated_correlations_and_keeps_the_variance(rho):
    k = correlation_kernel(rho)
    a = k[0] / k[1]
    assert np.sum(k**2) == pytest.approx(1.0)
    assert k[0] * k[1] + k[1] * k[2] == pytest.approx(rho)  # lag-1 autocorrelation of a unit-norm kernel
    assert k[0] * k[2] == pytest.approx(a**2 / (1 + 2 * a**2))
    corr = noise_autocorrelation(noisy(rho), FLAT)
    assert corr.vertical == pytest.approx(rho, abs=0.01) and corr.horizontal == pytest.approx(rho, abs=0.01)
    assert corr.diagonal == pytest.approx(rho**2, abs=0.01)
    assert corr.lag2 == pytest.approx(k[0] * k[2], abs=0.01)
    variance = MODEL.variance(100.0)
    assert np.var(noisy(rho) - FLAT) == pytest.approx(variance, rel=0.02)


def test_zero_correlation_is_the_paper_noise_and_impossible_ones_are_refused():
    assert np.array_equal(noisy(0.0, seed=3), poisson_gaussian(FLAT, MODEL, np.random.default_rng(3)))
    with pytest.raises(ValueError, match="correlation must be in"):
        correlation_kernel(0.8)


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.6])
def test_single_image_estimate_matches_the_reference_based_one(rho):
    y = noisy(rho, seed=1)
    est, true = estimate_autocorrelation(y), noise_autocorrelation(y, FLAT)
    assert est.lag1 == pytest.approx(true.lag1, abs=0.02)
    assert est.diagonal == pytest.approx(true.diagonal, abs=0.02)
    assert est.lag2 == pytest.approx(true.lag2, abs=0.02)


def _measured(y: np.ndarray) -> Autocorrelation:
    return Autocorrelation.from_kernel(measured_kernel(y))


def test_auto_picks_2_on_white_noise_and_wider_on_correlated_noise():
    assert choose_stride(_measured(noisy(0.0))) == 2
    assert choose_stride(_measured(noisy(0.3))) == 3
    assert choose_stride(_measured(noisy(0.6))) == 3
    # a 5-tap box filter: lag 1 0.8, lag 2 0.6 -> pixels two apart are still correlated
    wide = ndimage.uniform_filter(np.random.default_rng(0).normal(size=(256, 256)), 5)
    assert choose_stride(estimate_autocorrelation(wide)) == 4
    stride, corr, kernel = resolve_stride("auto", [noisy(0.6, seed=s).astype(np.float32) for s in range(2)])
    assert stride == 3 and corr.lag1 == pytest.approx(0.6, abs=0.03) and kernel is None  # whiten: false


def test_texture_does_not_read_as_correlated_noise():
    """White noise on a textured clean image: the image-domain estimate reads texture as
    correlation; the measured kernel (the spectrum's noise band) keeps such planes at stride 2."""
    clean = 20.0 + 200.0 * clean_image((384, 384), np.random.default_rng(2))
    y = noisy(0.0, seed=2, clean=clean)
    assert _measured(y).lag1 < 0.05 and choose_stride(_measured(y)) == 2
    assert _measured(noisy(0.3, seed=2, clean=clean)).lag1 > 0.22
    assert resolve_stride(3, [FLAT]) == (3, None, None)


@pytest.mark.parametrize("stride", [3, 4])
def test_pd_sub_sampler_keeps_exactly_one_input_pixel_per_cell(stride):
    """A cell is the four corners of an s x s box (pixels f = s - 1 apart): one is the input, the
    other three are the targets; no other pixel of the crop is input or target."""
    f = stride - 1
    p = 8
    crop = torch.arange(2 * (f * p) ** 2, dtype=torch.float32).view(2, 1, f * p, f * p)  # unique values
    gen = torch.Generator().manual_seed(0)
    inp, target, mask = objective("n2sr", stride=stride).make(crop, gen)
    assert inp.shape == (2, 1, p // 2, p // 2) and target.shape == mask.shape == (2, 1, p, p)
    for n in range(2):
        pos = {float(v): divmod(i, f * p) for i, v in enumerate(crop[n, 0].flatten())}
        (py, px), = {divmod(int(v) % (f * p) ** 2, f * p) for v in target[n, 0, :1, :1].flatten()}
        phase = (py % f, px % f)  # the PD sub-image this sample came from
        for a in range(p // 2):
            for b in range(p // 2):
                corners = [(f * (2 * a + u) + phase[0], f * (2 * b + v) + phase[1]) for u in (0, 1) for v in (0, 1)]
                chosen = pos[float(inp[n, 0, a, b])]
                assert chosen in corners
                cell = mask[n, 0, 2 * a:2 * a + 2, 2 * b:2 * b + 2]
                cell_pos = [pos[float(v)] for v in target[n, 0, 2 * a:2 * a + 2, 2 * b:2 * b + 2].flatten()]
                assert sorted(cell_pos) == sorted(corners)
                assert cell.sum() == 3 and [q for q, m in zip(cell_pos, cell.flatten()) if m == 0] == [chosen]


def test_stride_2_draws_what_the_paper_sub_sampler_draws():
    batch = torch.rand(3, 1, 16, 16)
    got = objective("n2sr").make(batch, torch.Generator().manual_seed(5))
    want = subsample(batch, torch.Generator().manual_seed(5))
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[1]) and torch.equal(got[1], batch)


def test_random_phase_is_one_pd_sub_image():
    batch = torch.arange(36.0).view(1, 1, 6, 6)
    out = random_phase(batch, 3, torch.Generator().manual_seed(0))
    phases = [batch[0, 0, i::3, j::3] for i in range(3) for j in range(3)]
    assert out.shape == (1, 1, 2, 2) and any(torch.equal(out[0, 0], ph) for ph in phases)


@pytest.mark.parametrize("shape", [(12, 12), (13, 17)])
def test_split_and_merge_are_inverse(shape):
    planes = np.random.default_rng(0).random((2, *shape))
    for f in (2, 3):
        subs = split(planes, f)
        assert subs.shape[0] == 2 * f * f
        phase = planes[0, 0::f, 1::f]  # sub-image 1: row phase 0, column phase 1 (edge padding beyond)
        assert np.array_equal(subs[1][: phase.shape[0], : phase.shape[1]], phase)
        assert np.array_equal(merge(subs, f, shape), planes)


def test_decorrelated_engine_puts_every_pixel_back_in_place():
    """With an identity 2x network (nearest upsampling), PD inference returns the input, for whole
    planes and for a window's region."""
    def forward(x):
        return F.interpolate(x, scale_factor=2, mode="nearest")
    engine = Engine(forward, DenoiseConfig(device="cpu", overlap=0), scale=2, receptive_field=0,
                    normalizer=Normalizer(0.0, 1.0, "range"))
    plane = np.random.default_rng(1).random((70, 45)).astype(np.float32)
    run = Decorrelated(engine, 3)
    np.testing.assert_allclose(run.denoise_array(plane[None], progress=False)[0][0], plane, rtol=1e-6)
    region, _ = run.denoise_window(plane[None], ((0, 0), (10, 5, 40, 30), plane.shape))
    np.testing.assert_allclose(region[0], plane[10:40, 5:30], rtol=1e-6)
    with pytest.raises(ValueError, match="no 2x super-resolved output"):
        run.denoise_window(plane[None], ((0, 0), (0, 0, 70, 45), plane.shape), return_sr=True)


def test_checkpoint_records_the_auto_stride_and_denoise_honours_it(tmp_path):
    small = ModelConfig(features=8, final_features=8, unet_out_channels=8, sr_channels=8)
    cfg = TrainConfig(iterations=2, batch_size=2, patch_size=32, val_fraction=0.0, device="cpu", stride="auto",
                      whiten=False, model=small)
    plane = np.clip(noisy(0.6)[:256, :256], 0, 255).astype(np.float32)
    train_planes([plane], tmp_path / "m.pt", cfg, progress=False)
    ckpt = checkpoints.load(tmp_path / "m.pt")
    assert ckpt["stride"] == 3 and ckpt["stride_choice"]["requested"] == "auto"
    assert ckpt["stride_choice"]["estimate"]["lag1"] == pytest.approx(0.6, abs=0.05)
    tifffile.imwrite(tmp_path / "in.tif", plane)
    denoise(tmp_path / "m.pt", tmp_path / "in.tif", tmp_path / "out.tif", DenoiseConfig(device="cpu"))
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.shape == plane.shape and np.isfinite(out).all()
    # the streamed Zarr path (blocks of 128^2 with context) gives what the in-memory path gives
    assert main(["ingest", str(tmp_path / "in.tif"), str(tmp_path / "in.zarr")]) == 0
    denoise(tmp_path / "m.pt", tmp_path / "in.zarr", tmp_path / "out.zarr", DenoiseConfig(device="cpu", block_size=128))
    streamed = omezarr.open_image(tmp_path / "out.zarr")[...].reshape(plane.shape)
    np.testing.assert_allclose(streamed, out, atol=0.5)
    with pytest.raises(InputError, match="no 2x output"):
        denoise(tmp_path / "m.pt", tmp_path / "in.tif", tmp_path / "o2.tif", sr=tmp_path / "sr.tif")


def test_add_noise_draws_correlated_copies_and_checks_the_correlation(tmp_path):
    ref = tmp_path / "ref.tif"
    tifffile.imwrite(ref, np.full((128, 128), 120, np.uint8))
    manifest = add_noise(tmp_path / "out", {"a": ref}, {"c": {"lam": 30, "sigma": 2, "correlation": 0.6}})
    y = tifffile.imread(tmp_path / "out" / "c" / "raw" / "a" / "capture_00.tif")
    assert noise_autocorrelation(y, np.full(y.shape, 120.0)).lag1 == pytest.approx(0.6, abs=0.03)
    assert (manifest["correlation"] == 0.6).all()
    with pytest.raises(ValueError, match="correlation must be in"):
        add_noise(tmp_path / "bad", {"a": ref}, {"c": {"lam": 30, "correlation": 0.9}})
    with pytest.raises(ValueError, match="expected lam and/or sigma"):
        add_noise(tmp_path / "bad", {"a": ref}, {"c": {"correlation": 0.3}})
