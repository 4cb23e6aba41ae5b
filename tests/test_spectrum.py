"""Noise level and correlation from the periodogram's noise band (n2sr/spectrum.py)."""

from __future__ import annotations

import numpy as np
import pytest

from n2sr import estimate, spectrum
from n2sr.noise import correlated_poisson_gaussian, paper_noise_model, poisson_gaussian
from n2sr.synthetic import clean_image


def _clean(seed: int) -> np.ndarray:
    return 20.0 + 200.0 * clean_image((256, 256), np.random.default_rng(seed))


def test_periodic_component_removes_the_jump_between_opposite_edges():
    ramp = np.add.outer(np.arange(64.0), 2.0 * np.arange(48.0))
    p = spectrum.periodic_component(ramp)
    jumps = np.abs(p[0] - p[-1]).mean() + np.abs(p[:, 0] - p[:, -1]).mean()
    assert jumps < 0.05 * (np.abs(ramp[0] - ramp[-1]).mean() + np.abs(ramp[:, 0] - ramp[:, -1]).mean())
    noise = np.random.default_rng(0).normal(size=(64, 48))
    assert np.abs(spectrum.periodic_component(noise) - noise).std() < 0.2  # noise stays noise


@pytest.mark.parametrize("lam, sigma", [(None, 15.0), (15.0, 5.0), (20.0, 0.0)])
def test_white_noise_reads_white_and_its_energy_within_two_percent(lam, sigma):
    model = paper_noise_model(lam, sigma)
    errors = []
    for seed in range(3):
        x = _clean(seed)
        y = poisson_gaussian(x, model, np.random.default_rng(10 + seed))
        kernel = spectrum.band_correlation(y)
        assert np.array_equal(kernel, estimate.WHITE)
        errors.append(spectrum.band_energy(y, kernel) / float(np.mean((y - x) ** 2)) - 1)
    assert max(abs(e) for e in errors) < 0.02


def test_band_correlation_sees_neighbour_correlation_and_the_energy_follows():
    model = paper_noise_model(30.0, 2.0)
    x = _clean(4)
    y = correlated_poisson_gaussian(x, model, 0.2, np.random.default_rng(4))
    kernel = spectrum.band_correlation(y)
    assert 0.12 < kernel[2, 3] < 0.25 and 0.12 < kernel[3, 2] < 0.25
    truth = float(np.mean((y - x) ** 2))
    assert abs(spectrum.band_energy(y, kernel) / truth - 1) < 0.06
    assert spectrum.band_energy(y, estimate.WHITE) < 0.85 * truth  # read as white, the band misses 19 %


def scan_line_noise(x: np.ndarray, sigma: float, c: float, seed: int) -> np.ndarray:
    """`x` plus Gaussian noise of std `sigma` correlated ``c / (1 + c^2)`` with its neighbour along
    x only, as a point-scanning microscope's (consecutive pixels of a line share detector response)."""
    n = np.random.default_rng(seed).normal(size=x.shape)
    return x + sigma * (n + c * np.roll(n, 1, axis=1)) / np.sqrt(1 + c * c)


def test_scan_line_fit_reads_correlation_along_x_only_and_the_energy_follows():
    """Noise correlated 0.15 along the scan lines: fitted over `SCAN_LAGS` the kernel has that lag
    along x and none along y, and the energy from `SHAPE_BAND` with it is within 3 %; read as
    white, the band misses the correlation's share."""
    x = _clean(6)
    y = scan_line_noise(x, 12.0, 0.16, 6)
    kernel = spectrum.band_correlation(y, spectrum.SCAN_LAGS)
    assert kernel[2, 3] == pytest.approx(0.16 / (1 + 0.16**2), abs=0.03)
    assert not kernel[[0, 1, 3, 4], :].any() and kernel[2, 4] == 0.0  # lag (0, 2) is below NEGLIGIBLE
    truth = float(np.mean((y - x) ** 2))
    assert abs(spectrum.band_energy(y, kernel, spectrum.SHAPE_BAND) / truth - 1) < 0.03
    assert spectrum.band_energy(y, estimate.WHITE, spectrum.SHAPE_BAND) < 0.93 * truth  # misses about 10 %


def test_pieces_are_pooled_and_tiny_ones_refused():
    x = _clean(5)
    y = poisson_gaussian(x, paper_noise_model(None, 10.0), np.random.default_rng(5))
    whole = spectrum.band_energy(y, estimate.WHITE)
    parts = spectrum.band_energy([y[:128], y[128:, :100], y[128:, 100:]], estimate.WHITE)
    assert parts == pytest.approx(whole, rel=0.03)
    with pytest.raises(ValueError, match="16 x 16"):
        spectrum.band_energy([y[:8, :8]], estimate.WHITE)


def test_calibrated_fit_has_the_band_energy_and_the_level_set_shape():
    model = paper_noise_model(15.0, 5.0)
    x = _clean(6)
    y = poisson_gaussian(x, model, np.random.default_rng(6))
    raw = estimate.estimate_poisson_gaussian(y)
    fitted = estimate.fit(y)
    assert fitted.a / fitted.b == pytest.approx(raw.a / raw.b)
    energy = float(np.mean(estimate.noise_variance(y, fitted)))
    assert energy == pytest.approx(spectrum.band_energy(y, estimate.noise_kernel(y)))
    assert abs(energy / float(np.mean(model.a * x + model.b)) - 1) < 0.02


def test_a_plane_larger_than_a_tile_is_read_tile_by_tile():
    x = 20.0 + 200.0 * clean_image((1100, 700), np.random.default_rng(7))
    y = poisson_gaussian(x, paper_noise_model(20.0, 3.0), np.random.default_rng(7))
    assert len(list(spectrum._tiles([y]))) == 6 and max(max(t.shape) for t in spectrum._tiles([y])) <= spectrum.TILE
    kernel = spectrum.band_correlation(y)
    assert np.array_equal(kernel, estimate.WHITE)
    assert abs(spectrum.band_energy(y, kernel) / float(np.mean((y - x) ** 2)) - 1) < 0.02
