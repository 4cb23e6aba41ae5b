"""BM3D with a blind Poisson-Gaussian model: denoises, keeps units, validates its noise option."""

from __future__ import annotations

import numpy as np
import pytest

from n2sr.bm3d import bm3d_denoise
from n2sr.metrics import psnr


def scene(n: int = 96) -> np.ndarray:
    """Bright discs and a ramp on a dark background, 0-255 scale."""
    yy, xx = np.mgrid[0:n, 0:n] / n
    img = 10.0 + 60.0 * xx
    for cy, cx, r in [(0.3, 0.3, 0.15), (0.7, 0.6, 0.2), (0.25, 0.75, 0.1)]:
        img += 150.0 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r**2)
    return img


@pytest.fixture(scope="module")
def noisy_pair() -> tuple[np.ndarray, np.ndarray]:
    clean = scene()
    rng = np.random.default_rng(0)
    a, sigma = 4.0, 2.0
    return clean, a * rng.poisson(clean / a) + rng.normal(0.0, sigma, clean.shape)


@pytest.mark.parametrize("noise", ["auto", (4.0, 4.0)])
def test_bm3d_improves_psnr(noisy_pair, noise):
    clean, noisy = noisy_pair
    out = bm3d_denoise(noisy, noise=noise)
    assert out.dtype == np.float32 and out.shape == noisy.shape
    assert psnr(clean, out, 255) > psnr(clean, noisy, 255) + 4.0
    assert abs(out.mean() - clean.mean()) < 1.0  # the unbiased inverse keeps the intensity scale


def test_bm3d_gaussian_path():
    clean = scene(64)
    noisy = clean + np.random.default_rng(1).normal(0.0, 15.0, clean.shape)
    before = noisy.copy()
    out = bm3d_denoise(noisy, noise=15.0)
    np.testing.assert_array_equal(noisy, before)  # input untouched
    assert psnr(clean, out, 255) > psnr(clean, noisy, 255) + 4.0


@pytest.mark.parametrize(
    ("noise", "match"), [("sigma", "auto"), (-1.0, "> 0"), ((-1.0, 2.0), "a must be"), ((0.0, 0.0), "nothing to")]
)
def test_bm3d_rejects_bad_noise(noise, match):
    with pytest.raises(ValueError, match=match):
        bm3d_denoise(scene(64), noise=noise)
