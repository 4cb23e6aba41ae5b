"""Estimates of a large plane from crops (`denoise.estimate_pixels`, n2sr.regions.crops).

A plane of more than `estimate_pixels` is estimated on crops with the denoiser's context around
them; a smaller one exactly as the whole plane always was; and the crops' estimate stays close
to the whole plane's where the plane's content is alike throughout.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from n2sr import estimate, regions
from n2sr.config import DenoiseConfig, ModelConfig
from n2sr.nn.inference import Engine
from n2sr.nn.model import build_model, receptive_field
from n2sr.nn.normalize import Normalizer
from n2sr.nn.probe import _run, _window, held_out_predictions, plane_estimates
from n2sr.noise import PoissonGaussian, correlated_poisson_gaussian, paper_noise_model, poisson_gaussian
from n2sr.synthetic import clean_image

NORM = Normalizer(offset=100.0, scale=50.0, mode="meanstd")
MODEL = paper_noise_model(15.0, 5.0)


def _noisy(shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = 20.0 + 200.0 * clean_image(shape, np.random.default_rng(seed))
    return x, poisson_gaussian(x, MODEL, np.random.default_rng(100 + seed))


class Blur:
    """A local denoiser with the runner's interface: a Gaussian blur (reach 7 pixels, within
    the context), its 2x output the blur repeated, so Noise2SR's held-out path runs too."""

    context = 32

    def denoise_window(self, planes, window, return_sr=False, dtype=None):
        origin, (y0, x0, y1, x1), _ = window
        out = ndimage.gaussian_filter(np.asarray(planes, np.float64), (0, 1.5, 1.5))
        return out[:, y0 - origin[0]:y1 - origin[0], x0 - origin[1]:x1 - origin[1]], None

    def denoise_array(self, arr, return_sr=False, progress=True):
        out = ndimage.gaussian_filter(np.asarray(arr, np.float64), 1.5)
        return out, (out.repeat(2, -2).repeat(2, -1) if return_sr else None)


def test_crops_total_the_budget_spread_over_the_plane():
    assert regions.crops((512, 512), 262144, 32) is None and regions.crops((4000, 4000), 0, 32) is None
    assert regions.crops((300, 300), 4096, 64) is None  # windows twice cost more than the plane once
    found = regions.crops((1000, 800), 40000, 0)
    assert [c.region for c in found] == [(200, 150, 300, 250), (200, 550, 300, 650),
                                           (700, 150, 800, 250), (700, 550, 800, 650)]
    assert sum((y1 - y0) * (x1 - x0) for (y0, x0, y1, x1), _ in found) == 40000
    for (y0, x0, y1, x1), _ in found:  # one crop centred in each quarter
        assert (y0 + y1) // 2 in (250, 750) and (x0 + x1) // 2 in (200, 600)
    narrow = regions.crops((20000, 24), 4096, 0)  # a narrow plane: the budget goes to the long axis
    assert all(x1 - x0 == 12 for (_, x0, _, x1), _ in narrow)
    assert 4000 <= sum((y1 - y0) * (x1 - x0) for (y0, x0, y1, x1), _ in narrow) <= 4096
    wide = found[0].widened(32, (1000, 800), 32)
    assert wide.window == (160, 96, 352, 288) and wide.inner == (slice(40, 140), slice(54, 154))


def _local_net(x: torch.Tensor) -> torch.Tensor:
    """A 'network' with a 2-pixel reach: a 5 x 5 mean, then the 2x output by repetition."""
    return F.interpolate(F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False), scale_factor=2)


def test_crop_windows_give_the_whole_plane_output():
    """With the engine's context around it, a crop's output is the whole plane's, bit for bit."""
    engine = Engine(_local_net, DenoiseConfig(device="cpu", precision="fp32"), scale=2, receptive_field=2,
                    normalizer=NORM)
    _, y = _noisy((400, 400))
    whole = engine.denoise_plane(y.astype(np.float32))[0]
    for c in regions.crops(y.shape, 4096, engine.context, 32):
        (wy0, wx0, wy1, wx1), (y0, x0, y1, x1) = c.window, c.region
        assert (wy1 - wy0) * (wx1 - wx0) < y.size  # a real crop, not the whole plane
        np.testing.assert_array_equal(_window(engine, y[wy0:wy1, wx0:wx1], c, y.shape), whole[y0:y1, x0:x1])


@pytest.fixture(scope="module")
def tiny_engine() -> Engine:
    torch.manual_seed(0)
    small = ModelConfig(features=8, final_features=16, unet_out_channels=8, sr_channels=8)
    return Engine(build_model(small, 2).eval(), DenoiseConfig(device="cpu", precision="fp32"), scale=2,
                  receptive_field=receptive_field(small), normalizer=NORM)


def test_a_plane_within_the_budget_is_estimated_as_before(tiny_engine):
    """Bitwise the whole-plane computation (the stored output, one perturbed pass, the draws)."""
    _, y = _noisy((64, 64))
    out = tiny_engine.denoise_array(y.astype(np.float32), progress=False)[0]
    entry = plane_estimates(tiny_engine, y, out, method="n2sr", settings=None, sr=True, draws=2, seed=3,
                            pixels=DenoiseConfig.estimate_pixels)
    model = estimate.fit(y)
    sure, eps = estimate.black_box_sure(lambda z: _run(tiny_engine, z), y, out, model, 3)
    held = estimate.held_out(y, *held_out_predictions(tiny_engine, y, "n2sr", None, 2, 3), model)
    assert (entry["sure_mse"], entry["sure_se"], entry["sure_step"]) == (sure.mse, sure.se, eps)
    assert (entry["held_out_mse"], entry["held_out_se"]) == (held.mse, held.se)
    assert entry["pixels"] == 64 * 64
    assert plane_estimates(tiny_engine, y, out, method="n2sr", settings=None, sr=True, draws=2, seed=3,
                           pixels=0) == entry


@pytest.mark.parametrize("method, kind", [("n2sr", "complement"), ("n2v", "masked")])
def test_a_larger_plane_is_estimated_on_crops_and_says_so(tiny_engine, method, kind):
    _, y = _noisy((512, 512))
    calls = []
    entry = plane_estimates(tiny_engine, y, lambda: calls.append(1), method=method, settings=None, sr=True,
                            draws=2, seed=0, pixels=4096)
    assert not calls  # the crops compute their own output: the whole plane's is never asked for
    assert entry["pixels"] == 4096 and entry["held_out_kind"] == kind
    assert math.isfinite(entry["sure_mse"]) and math.isfinite(entry["held_out_mse"])


class CountingView:
    """A plane that records the pixels read from it (as `n2sr.io.planes.PlaneView` reads a Zarr)."""

    def __init__(self, plane: np.ndarray):
        self.plane, self.read = plane, 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.plane.shape

    def __getitem__(self, key):
        out = self.plane[key]
        self.read += out.size
        return out


@pytest.mark.parametrize("pixels", [0, 4096])
def test_no_held_out_estimate_where_the_noise_is_correlated(tiny_engine, pixels):
    """Theorem 1 needs pixel-wise independent noise: on widefield-like noise the held-out loss is
    not computed, and the entry says why (`held_out_kind` "correlated"); SURE still is."""
    x, _ = _noisy((512, 512))
    y = correlated_poisson_gaussian(x, MODEL, 0.5, np.random.default_rng(7))
    for method in ("n2sr", "n2v"):
        entry = plane_estimates(tiny_engine, y, lambda: tiny_engine.denoise_array(y.astype(np.float32))[0],
                                method=method, settings=None, sr=True, draws=2, seed=0, pixels=pixels)
        assert entry["held_out_kind"] == "correlated" and entry["held_out_draws"] == 0
        assert entry["held_out_mse"] is None and math.isfinite(entry["sure_mse"])


def test_a_plane_estimated_on_crops_is_read_only_there(tiny_engine):
    """The estimates of a huge plane take memory for the crops: the noise is fitted on their
    windows, so the plane itself is never read whole, and the result is the one of the array."""
    _, y = _noisy((1024, 1024))
    view = CountingView(y)
    kw = dict(method="n2sr", settings=None, sr=True, draws=2, seed=0, pixels=16384)
    entry = plane_estimates(tiny_engine, view, lambda: None, **kw)
    assert 0 < view.read < y.size / 4
    assert entry == plane_estimates(tiny_engine, y, lambda: None, **kw)
    fitted = PoissonGaussian(entry["noise_a"], entry["noise_b"])  # the windows' fit is close to the whole plane's
    energy = [float(np.mean(estimate.noise_variance(y, m))) for m in (fitted, estimate.fit(y), MODEL)]
    assert energy[0] == pytest.approx(energy[1], rel=0.05) and energy[0] == pytest.approx(energy[2], rel=0.05)


def test_crop_estimate_is_close_to_the_whole_plane_one():
    """Poisson-Gaussian noise on a synthetic plane alike throughout, a local denoiser: the
    estimates from crops of 1/6 of the plane are within 2 of their standard errors and 0.75 dB
    of the whole plane's (measured: SURE 0.2 dB, held-out 0.4 dB, standard errors 0.6-0.8 dB),
    and the crops' SURE within 3 standard errors of the crops' true MSE."""
    x, y = _noisy((640, 640), seed=5)
    blur = Blur()
    out = blur.denoise_array(y)[0]
    kw = dict(method="n2sr", settings=None, sr=True, draws=4, seed=0)
    whole = plane_estimates(blur, y, out, **kw, pixels=0)
    part = plane_estimates(blur, y, out, **kw, pixels=65536)
    assert part["pixels"] == 65536 and whole["pixels"] == 640 * 640
    for name in ("sure", "held_out"):
        assert abs(part[f"{name}_mse"] - whole[f"{name}_mse"]) < 2 * part[f"{name}_se"]
        assert abs(10 * math.log10(whole[f"{name}_mse"] / part[f"{name}_mse"])) < 0.75
    err = np.concatenate([(out - x)[r[0]:r[2], r[1]:r[3]].ravel() for r, _ in regions.crops(y.shape, 65536, 0)])
    assert abs(part["sure_mse"] - float(np.mean(err**2))) < 3 * part["sure_se"]


def test_columns_of_a_large_plane_are_measured_on_its_crops():
    """The evaluate step's columns of a plane above the limit come from its crops (as the
    denoising step's estimates do), close to the whole plane's where the content is alike;
    the noise correlation included (0.4 between neighbours here)."""
    x = 20.0 + 200.0 * clean_image((384, 384), np.random.default_rng(2))
    y = correlated_poisson_gaussian(x, MODEL, 0.4, np.random.default_rng(102))
    out = ndimage.gaussian_filter(y, 1.5)
    whole, part = (estimate.columns(y, out, None, 255.0, identity=False, pixels=p) for p in (0, 16384))
    noisy_part = estimate.columns(y, y, None, 255.0, identity=True, pixels=16384)
    assert noisy_part["est_pixels"] == 16384
    assert estimate.columns(y, y, None, 255.0, identity=True)["est_pixels"] == y.size
    assert part["noise_energy"] == pytest.approx(whole["noise_energy"], rel=0.1)
    assert part["residual_ratio"] == pytest.approx(whole["residual_ratio"], rel=0.1)
    assert abs(part["noise_lag1"] - whole["noise_lag1"]) < 0.05 and whole["noise_lag1"] == pytest.approx(0.4, abs=0.05)
