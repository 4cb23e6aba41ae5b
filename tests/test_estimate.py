"""Reference-free MSE estimates (n2sr/estimate.py) against the known clean image.

Synthetic planes with Gaussian and Poisson-Gaussian noise, denoised by simple linear and
non-linear filters; each estimator's mean error over several noise draws must lie within its
stated tolerance (a few standard errors, the interval it reports).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from n2sr import estimate, spectrum
from n2sr.io.images import read_image
from n2sr.noise import (PoissonGaussian, correlated_poisson_gaussian, estimate_poisson_gaussian, paper_noise_model,
                        poisson_gaussian)
from n2sr.synthetic import clean_image
from test_spectrum import scan_line_noise

MODELS = {"gaussian": paper_noise_model(None, 15.0), "poisson_gaussian": paper_noise_model(15.0, 5.0)}
FILTERS = {
    "gaussian_blur": lambda y: ndimage.gaussian_filter(y, 1.2),
    "median": lambda y: ndimage.median_filter(y, size=3).astype(np.float64),
}


def _clean(seed: int = 0) -> np.ndarray:
    return 20.0 + 200.0 * clean_image((192, 192), np.random.default_rng(seed))


def assert_within_stated_error(errors: list[float], ses: list[float], truths: list[float]) -> None:
    """The mean error over the draws within 3 standard errors of that mean and below 5 % of the
    MSE; the stated 95 % interval covers the truth in most draws (4 of 6)."""
    assert abs(np.mean(errors)) < 3 * np.mean(ses) / math.sqrt(len(errors)) + 0.05 * np.mean(truths)
    assert sum(abs(e) < estimate.Z95 * s for e, s in zip(errors, ses)) >= 4


@pytest.mark.parametrize("noise", MODELS)
@pytest.mark.parametrize("name", FILTERS)
def test_sure_mean_error_within_its_standard_error(noise, name):
    model, f = MODELS[noise], FILTERS[name]
    errors, ses, truths = [], [], []
    for seed in range(6):
        x = _clean(seed)
        y = poisson_gaussian(x, model, np.random.default_rng(100 + seed))
        p = estimate.probe(y.shape, seed)
        eps = estimate.probe_step(y, model)
        est = estimate.sure(y, f(y), f(y + eps * estimate.direction(y, model, p, estimate.WHITE)), p, eps, model)
        truth = float(np.mean((f(y) - x) ** 2))
        errors.append(est.mse - truth)
        ses.append(est.se)
        truths.append(truth)
    assert_within_stated_error(errors, ses, truths)


def test_sure_with_the_blind_noise_fit_gives_psnr_within_one_db():
    """With (a, b) fitted from the plane itself: a 1 % error in the noise energy moves the
    estimate by about 1 % of the noise energy, a large share of a good denoiser's MSE."""
    model = MODELS["poisson_gaussian"]
    x = _clean(7)
    y = poisson_gaussian(x, model, np.random.default_rng(7))
    fitted = estimate_poisson_gaussian(y)
    f = FILTERS["gaussian_blur"]
    p = estimate.probe(y.shape, 0)
    eps = estimate.probe_step(y, fitted)
    est = estimate.black_box_sure(f, y, f(y), fitted, 0)[0]
    true_psnr = estimate.mse_to_psnr(float(np.mean((f(y) - x) ** 2)), 255.0)
    assert abs(est.psnr(255.0)[0] - true_psnr) < 1.0


def test_sure_counts_correlated_noise_that_white_noise_sure_misses():
    """Noise correlated 0.4 between neighbours, a blur that averages them: SURE with the
    correlation estimated from each plane is within its stated error; assuming white noise, it
    credits the blur with removing noise it kept (the MSE read several times too low)."""
    model = MODELS["poisson_gaussian"]
    f = FILTERS["gaussian_blur"]
    errors, ses, truths, white = [], [], [], []
    for seed in range(6):
        x = _clean(seed)
        y = correlated_poisson_gaussian(x, model, 0.4, np.random.default_rng(300 + seed))
        truth = float(np.mean((f(y) - x) ** 2))
        est, _ = estimate.black_box_sure(f, y, f(y), model, seed)
        errors.append(est.mse - truth)
        ses.append(est.se)
        truths.append(truth)
        white.append(estimate.black_box_sure(f, y, f(y), model, seed, kernel=estimate.WHITE)[0].mse)
    assert_within_stated_error(errors, ses, truths)
    assert np.mean(white) < 0.5 * np.mean(truths)


def test_fit_reads_the_shape_of_widefield_noise_over_tiles():
    """`fit` uses the tiles (`estimate_poisson_gaussian`'s step 5) where the plane's noise is
    widefield-like, so a dim plane's a x + b keeps its shape; white noise keeps the level sets."""
    model = paper_noise_model(30.0, 2.0)
    x = 4.0 + 26.0 * clean_image((256, 256), np.random.default_rng(5))
    y = correlated_poisson_gaussian(x, model, 0.6, np.random.default_rng(5))
    fitted = estimate.fit(y)
    assert fitted.variance(30.0) / fitted.variance(4.0) == pytest.approx(model.variance(30.0) / model.variance(4.0),
                                                                         rel=0.15)
    white = poisson_gaussian(x, model, np.random.default_rng(5))
    assert estimate.fit(white) == estimate.calibrated(estimate_poisson_gaussian(white), white)


def test_sure_of_a_point_scanner_counts_its_scan_line_correlation():
    """Noise correlated 0.28 along x only, blurred: SURE with the blind fit and kernel of a point
    scanner (`scanned`: no y lag) is within its stated error; read as white, the MSE comes out too low."""
    f = FILTERS["gaussian_blur"]
    errors, ses, truths, white = [], [], [], []
    for seed in range(6):
        x = _clean(seed)
        y = scan_line_noise(x, 12.0, 0.3, 400 + seed)
        kernel = estimate.noise_kernel(y, scanned=True)
        assert 0.18 < kernel[2, 3] < 0.3 and not kernel[[0, 1, 3, 4], :].any()
        model = estimate.fit(y, kernel, scanned=True)
        est, _ = estimate.black_box_sure(f, y, f(y), model, seed, kernel)
        truth = float(np.mean((f(y) - x) ** 2))
        errors.append(est.mse - truth)
        ses.append(estimate.with_fit_error(est, float(np.mean(estimate.noise_variance(y, model)))).se)
        truths.append(truth)
        white.append(estimate.black_box_sure(f, y, f(y), model, seed, estimate.WHITE)[0].mse)
    assert_within_stated_error(errors, ses, truths)
    assert np.mean(white) < 0.8 * np.mean(truths)


def test_a_point_scanners_textured_frame_keeps_its_texture_out_of_the_noise_energy(fmd_root):
    """FMD BPAE_G FOV 1 (actin filaments, one confocal capture; centre 256 x 256): the isotropic band
    fit reads the texture as neighbour correlation and noise, 27 % over the band energy of noisy
    minus avg50 (`benchmarks/results/noise_energy.md`); as a point scanner's (`scanned`), within 6 %."""
    def centre(z):
        return np.asarray(z, np.float64)[128:384, 128:384]

    y = centre(read_image(next((fmd_root / "Confocal_BPAE_G" / "raw" / "1").glob("*.png"))))
    noise = y - centre(read_image(fmd_root / "Confocal_BPAE_G" / "gt" / "1" / "avg50.png"))
    truth = spectrum.band_energy(noise, spectrum.band_correlation(noise))
    energy = lambda model: float(np.mean(estimate.noise_variance(y, model)))  # noqa: E731
    assert energy(estimate.fit(y)) > 1.2 * truth
    assert energy(estimate.fit(y, scanned=True)) == pytest.approx(truth, rel=0.06)


def test_noise_kernel_is_white_on_white_noise_and_small_planes():
    y = poisson_gaussian(_clean(3), MODELS["gaussian"], np.random.default_rng(3))
    k = estimate.noise_kernel(y)
    assert k.shape == (5, 5) and k[2, 2] == pytest.approx(1.0)
    assert np.abs(k - estimate.WHITE).max() < 0.1
    assert np.array_equal(estimate.noise_kernel(y[:19, :40]), estimate.WHITE)


@pytest.mark.parametrize("noise", MODELS)
def test_identity_sure_is_the_noise_energy(noise):
    model = MODELS[noise]
    x = _clean(1)
    y = poisson_gaussian(x, model, np.random.default_rng(1))
    est = estimate.identity_sure(y, model)
    truth = float(np.mean((y - x) ** 2))
    assert abs(est.mse - truth) < 0.03 * truth
    # the general formula with f = identity reduces to the same number
    p = estimate.probe(y.shape, 0)
    u = estimate.direction(y, model, p, estimate.WHITE)
    assert estimate.sure(y, y, y + 0.5 * u, p, 0.5, model).mse == pytest.approx(est.mse, rel=1e-9)


def _masked_prediction(y: np.ndarray, phase: tuple[int, int], grid: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Noise2Self-style: lattice pixels replaced by their 4 neighbours' mean, then blurred; the
    prediction at a masked pixel never sees that pixel's noise."""
    mask = np.zeros(y.shape, bool)
    mask[phase[0]::grid, phase[1]::grid] = True
    neighbours = ndimage.convolve(y, np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]) / 4.0, mode="reflect")
    return ndimage.gaussian_filter(np.where(mask, neighbours, y), 1.0), mask


@pytest.mark.parametrize("noise", MODELS)
def test_held_out_mean_error_within_its_standard_error(noise):
    model = MODELS[noise]
    errors, ses, truths = [], [], []
    for seed in range(6):
        x = _clean(seed)
        y = poisson_gaussian(x, model, np.random.default_rng(200 + seed))
        rng = np.random.default_rng(seed)
        preds, masks = zip(*[_masked_prediction(y, tuple(rng.integers(0, 4, 2))) for _ in range(4)])
        est = estimate.held_out(y, list(preds), list(masks), model)
        truth = float(np.mean([np.mean((f - x)[m] ** 2) for f, m in zip(preds, masks)]))
        errors.append(est.mse - truth)
        ses.append(est.se)
        truths.append(truth)
    assert_within_stated_error(errors, ses, truths)


def test_held_out_is_biased_when_the_prediction_sees_the_pixel():
    """The theorem's condition matters: predicting a pixel from itself hides its noise."""
    model = MODELS["gaussian"]
    x = _clean(3)
    y = poisson_gaussian(x, model, np.random.default_rng(3))
    f = y.copy()  # the identity sees every pixel's own noise
    mask = np.zeros(y.shape, bool)
    mask[::4, ::4] = True
    est = estimate.held_out(y, [f], [mask], model)
    assert est.mse < -0.5 * model.b  # about -b, where the truth is +b


def test_psnr_interval_and_edge_cases():
    est = estimate.Estimate(10.0, 1.0)
    psnr, lo, hi = est.psnr(255.0)
    assert lo < psnr < hi
    assert psnr == pytest.approx(10 * math.log10(255.0**2 / 10.0))
    assert estimate.mse_to_psnr(-1.0, 255.0) == math.inf
    assert math.isnan(estimate.mse_to_psnr(math.nan, 255.0))


def test_residual_check_flags_removed_signal_and_passes_a_good_denoiser():
    model = MODELS["gaussian"]
    x = _clean(4)
    y = poisson_gaussian(x, model, np.random.default_rng(4))
    good = estimate.residual_check(y, x, model)  # the oracle: the residual is the noise itself
    assert good.flag == "" and good.variance_ratio == pytest.approx(1.0, abs=0.05)
    flat = estimate.residual_check(y, np.full_like(y, y.mean()), model)  # every structure removed
    assert "signal removed" in flat.flag and "structured" in flat.flag
    assert "noise left" in estimate.residual_check(y, 0.9 * y + 0.1 * x, model).flag  # barely denoised


def test_input_snr():
    model = PoissonGaussian(0.0, 100.0)
    assert estimate.input_snr_db(np.full((8, 8), 100.0), model) == pytest.approx(20.0)
    assert math.isnan(estimate.input_snr_db(np.zeros((8, 8)), model))
