"""Noise model numerics: paper noise generators, blind (a, b) estimate, GAT and its inverse."""

from __future__ import annotations

import numpy as np
import pytest

from n2sr import gat, noise

LEVELS = (5.0, 40.0, 128.0, 240.0)


def smooth_image(shape: tuple[int, int] = (256, 256), lo: float = 10.0, hi: float = 200.0) -> np.ndarray:
    """Ramp plus broad blobs: smooth, with intensities spread over [lo, hi]."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    img = 0.5 * xx + 0.3 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.6) ** 2) / 0.02)
    img += 0.2 * np.exp(-((xx - 0.7) ** 2 + (yy - 0.3) ** 2) / 0.05)
    img = (img - img.min()) / np.ptp(img)
    return lo + (hi - lo) * img


def constant_patches(n: int = 200) -> np.ndarray:
    return np.stack([np.full((n, n), v) for v in LEVELS])


@pytest.mark.parametrize(
    ("lam", "sigma"),
    [(None, 15.0), (20.0, 0.0), (15.0, 5.0)],  # the paper's three settings
)
def test_paper_noise_has_stated_mean_and_variance(lam, sigma):
    clean = constant_patches()
    rng = np.random.default_rng(0)
    noisy = noise.poisson_gaussian(clean, noise.paper_noise_model(lam, sigma), rng)
    assert noisy.dtype == np.float64 and noisy.shape == clean.shape
    n = clean[0].size
    for level, patch in zip(LEVELS, noisy):
        var = (255.0 / lam if lam else 0.0) * level + sigma**2
        assert abs(patch.mean() - level) < 4 * np.sqrt(var / n)
        assert patch.var() == pytest.approx(var, rel=4 * np.sqrt(2 / n) + 0.01)


def test_paper_noise_model_and_options():
    assert noise.paper_noise_model(20, 5) == (12.75, 25.0)
    assert noise.paper_noise_model(None, 15) == (0.0, 225.0)
    clean = constant_patches(32)
    model = noise.paper_noise_model(15, 5)
    a = noise.poisson_gaussian(clean, model, np.random.default_rng(3))
    b = noise.poisson_gaussian(clean, model, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)  # the seed is the only source of randomness
    q = noise.quantize(a, "uint8")
    assert q.dtype == np.uint8 and q.min() >= 0 and q.max() <= 255
    np.testing.assert_array_equal(q, np.clip(np.floor(a + 0.5), 0, 255))  # rounded half up, clipped
    with pytest.raises(ValueError, match="clean >= 0"):
        noise.poisson_gaussian(-clean, noise.paper_noise_model(20), np.random.default_rng(0))
    with pytest.raises(ValueError, match="lam"):
        noise.paper_noise_model(0)
    with pytest.raises(ValueError, match="b >= 0"):
        noise.poisson_gaussian(clean, noise.PoissonGaussian(1.0, -2.0), np.random.default_rng(0))


def poisson_gaussian(x: np.ndarray, a: float, sigma: float, offset: float, rng: np.random.Generator) -> np.ndarray:
    """``a * Poisson((x - offset) / a) + offset + N(0, sigma**2)``: Var = a x + sigma**2 - a offset."""
    return a * rng.poisson((x - offset) / a) + offset + rng.normal(0.0, sigma, x.shape)


@pytest.mark.parametrize(
    ("a", "sigma", "offset"),
    [(2.0, 3.0, 0.0), (8.0, 1.0, 0.0), (4.0, 0.8, 5.0)],  # the last: FMD-like dark offset, b < 0
)
def test_estimator_recovers_known_model(a, sigma, offset):
    x = smooth_image()
    y = poisson_gaussian(x, a, sigma, offset, np.random.default_rng(1))
    est = noise.estimate_poisson_gaussian(y)
    true = noise.PoissonGaussian(a, sigma**2 - a * offset)
    levels = np.array([20.0, 60.0, 120.0, 180.0])
    np.testing.assert_allclose(np.sqrt(est.variance(levels)), np.sqrt(true.variance(levels)), rtol=0.06)
    assert est.a == pytest.approx(a, rel=0.1)


def test_estimator_gaussian_noise_gives_small_gain():
    y = smooth_image() + np.random.default_rng(2).normal(0.0, 10.0, (256, 256))
    est = noise.estimate_poisson_gaussian(y)
    assert est.a * 100 < 0.15 * est.b  # Poisson share < 15 % of the variance at x = 100
    assert np.sqrt(est.b) == pytest.approx(10.0, rel=0.1)


def test_tiles_fit_correlated_noise_shape_where_level_sets_flatten():
    """Widefield-like noise over a narrow intensity range: the 5 x 5 mean that the level sets bin
    on is noisy enough to mix them (regression dilution); tiles read the shape of a x + b."""
    x = smooth_image(lo=4.0, hi=30.0)
    true = noise.paper_noise_model(30, 2)
    y = noise.correlated_poisson_gaussian(x, true, 0.6, np.random.default_rng(0))
    ratio = lambda m: m.variance(30.0) / m.variance(4.0)  # noqa: E731 (scale-free: the residual's gain cancels)
    assert ratio(noise.estimate_poisson_gaussian(y, tile=32)) == pytest.approx(ratio(true), rel=0.1)
    assert ratio(noise.estimate_poisson_gaussian(y)) < 0.8 * ratio(true)
    small = y[:64, :64]  # 4 tiles: too few, the level sets' fit
    assert noise.estimate_poisson_gaussian(small, tile=32) == noise.estimate_poisson_gaussian(small)


def test_estimator_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        noise.estimate_poisson_gaussian(np.zeros((2, 64, 64)))
    with pytest.raises(ValueError, match="too small"):
        noise.estimate_poisson_gaussian(np.zeros((8, 64)))
    with pytest.raises(ValueError, match="saturated or constant"):
        noise.estimate_poisson_gaussian(np.full((64, 64), 7.0))


def test_fit_variance_line_exact_and_nonnegative_gain():
    x = np.linspace(5, 200, 12)
    n = np.full(12, 1000)
    assert noise.fit_variance_line(x, 3.0 * x - 10.0, n) == pytest.approx((3.0, -10.0))
    a, b = noise.fit_variance_line(x, 50.0 - 0.1 * x, n)  # decreasing: no physical gain
    assert a == 0.0 and 30 < b < 50


# (a, sigma, offset): Gaussian read noise, and FMD-like (dark offset, tiny read noise, b < 0)
MODELS = [(2.5, 2.0, 0.0), (4.0, np.sqrt(0.6), 3.0)]


@pytest.mark.parametrize(("a", "sigma", "offset"), MODELS)
def test_gat_stabilises_variance(a, sigma, offset):
    rng = np.random.default_rng(4)
    b = sigma**2 - a * offset
    for photons in (10.0, 30.0, 100.0, 1000.0):
        x = np.full(200_000, offset + a * photons)
        y = poisson_gaussian(x, a, sigma, offset, rng)
        assert gat.gat_forward(y, a, b).var() == pytest.approx(1.0, abs=0.06)


def test_gat_inverse_of_forward_is_near_identity():
    a, b = 3.0, 9.0
    x = np.linspace(20 * a, 250.0, 50)  # >= 20 photons
    np.testing.assert_allclose(gat.gat_inverse(gat.gat_forward(x, a, b), a, b), x, rtol=0.02)


@pytest.mark.parametrize(("a", "sigma", "offset"), [(1.0, 0.5, 0.0), *MODELS])
def test_gat_inverse_is_unbiased_where_algebraic_is_not(a, sigma, offset):
    rng = np.random.default_rng(5)
    b = sigma**2 - a * offset
    for photons in (2.0, 5.0, 20.0):
        x = offset + a * photons
        y = poisson_gaussian(np.full(400_000, x), a, sigma, offset, rng)
        d = gat.gat_forward(y, a, b).mean()  # what an ideal denoiser returns
        assert gat.gat_inverse(np.array(d), a, b) == pytest.approx(x, rel=0.02)
        algebraic = a * ((d / 2) ** 2 - 0.375) - b / a
        assert abs(algebraic - x) > 0.05 * a  # the bias the exact inverse removes


def test_gat_needs_positive_gain():
    with pytest.raises(ValueError, match="a > 0"):
        gat.gat_forward(np.ones(3), 0.0, 1.0)
