"""Reference-free quality estimates: the MSE of a denoised plane without its clean image.

Two estimators, both in the image's intensity units, under the Poisson-Gaussian model
``Var[y | x] = a x + b`` fitted blind (`n2sr.noise.estimate_poisson_gaussian`) and scaled to the
noise energy of the spectrum's noise band (`calibrated`, `n2sr.spectrum`):

* `sure`: Monte-Carlo SURE of the final output (Ramani, Blu and Unser 2008, IEEE TIP 17(9)),
  first-order PG-URE for the Poisson part (Luisier, Blu and Unser 2011; Le Montagner et al.
  2014). For ``y = x + n`` with noise covariance ``C``, ``E||f(y) - x||^2 = E||f(y) - y||^2 -
  E tr C + 2 E tr(C J)``, ``J`` the Jacobian of ``f``. The diagonal of ``C`` is ``v_i = a y_i + b``
  (exact for Gaussian noise; for the Poisson term ``E[x f(y)] = E[y f(y - a e_i)]`` to first
  order in `a`). The trace comes from one extra pass on ``y + eps u`` with a Rademacher probe
  `p` and ``u = C p`` (`direction`): ``tr(C J) ~ sum p_i (f(y + eps u) - f(y))_i / eps``.
  Noise that is correlated between neighbours (widefield cameras; FMD's confocal captures, 0.05
  along x) has off-diagonal ``C_ij = rho_ij sqrt(v_i v_j)``: a denoiser that averages
  neighbours then removes less noise than white-noise SURE credits it with. ``rho`` is read from
  the plane's noise band (`noise_kernel`). Works for any denoiser, BM3D included, and for the
  identity (the noisy input itself: the noise energy ``mean(a y + b)``).
* `held_out`: the paper's Theorem 1. A pixel whose noise the prediction never saw gives
  ``E (f_i - y_i)^2 = E (f_i - x_i)^2 + Var n_i``; the held-out loss of the complement pixels
  (Noise2SR's sub-sampler) or of the masked pixels (Noise2Void / Noise2Self) minus the fitted
  noise energy there estimates the MSE of that path, averaged over several random draws.

A large plane's estimates may come from `n2sr.regions.crops` of it (`cropped_sure`,
`pooled`): the MSE of those pixels, with an error that includes the spread between the crops.

Theorem 1 needs pixel-wise independent noise: with correlated noise the held-out pixels'
neighbours carry part of their noise into the prediction, and `held_out` reads too low an MSE.
`residual_check` says when the output's residual does not look like the fitted noise.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np

from scipy import ndimage

from n2sr import spectrum
from n2sr.correlation import Autocorrelation, measured_kernel, noise_autocorrelation
from n2sr.noise import PoissonGaussian, estimate_poisson_gaussian
from n2sr.regions import Crop, crops

Z95 = 1.959964  # two-sided 95 % normal quantile: the intervals are mse +- Z95 * se
PROBE_STEP = 0.05  # finite-difference step of the SURE probe, in units of the noise std
# The residual y - f(y) should carry the fitted noise: its variance over a f + b within these
# bounds (below: noise left in the output; above: signal removed) and its lag-1 correlation
# within RESIDUAL_LAG1 of the noise's own (structure left in the residual).
RESIDUAL_RATIO = (0.7, 1.3)
RESIDUAL_LAG1 = 0.1
# Relative standard error of the noise energy: the level-set fit's was up to 10 % on real FMD
# frames (noise_estimation.md); the band's is within 0.6 % on W2S and synthetic noise, but FMD's true
# energy is only known to a few % (reference_mismatch.md), so the intervals keep 5 %. It dominates
# them wherever the MSE is far below the noise energy (a strong denoiser).
NOISE_FIT_RSE = 0.05
# The image-domain correlation (widefield-like noise only, `noise_kernel`) uses a 5-pixel window:
# texture leaks into larger ones (`choose_stride` keeps the default 7).
KERNEL_WINDOW = 5
_MIN_SIDE = 4 * KERNEL_WINDOW  # the smallest plane side the correlation is estimated on (`estimate_kernel`)
# Widefield-like noise: the shape a x + b is fitted over tiles of this side (`fit`): 64 of them on
# a 256 x 256 crop; 16 and 8 read b 2-3x and 5x high on the lag-1 0.6 synthetic crops, 32 within 2x.
SHAPE_TILE = 32
SE_BLOCK = 8  # block side of the standard error of a plane's SURE terms (`_mean`)


class Estimate(NamedTuple):
    """An MSE estimate and its standard error (NaN where unknown)."""

    mse: float
    se: float

    def psnr(self, data_range: float) -> tuple[float, float, float]:
        """(PSNR, low, high) in dB for `data_range`, the 95 % interval from ``mse +- Z95 se``;
        an MSE at or below zero reads as +inf (the estimate is unbiased, so it can dip below)."""
        lo_mse, hi_mse = self.mse - Z95 * self.se, self.mse + Z95 * self.se
        return mse_to_psnr(self.mse, data_range), mse_to_psnr(hi_mse, data_range), mse_to_psnr(lo_mse, data_range)


NAN = Estimate(math.nan, math.nan)


def mse_to_psnr(mse: float, data_range: float) -> float:
    """``10 log10(R^2 / mse)``; +inf for mse <= 0, NaN for NaN."""
    if math.isnan(mse):
        return math.nan
    return math.inf if mse <= 0 else 10.0 * math.log10(data_range**2 / mse)


def noise_variance(noisy: np.ndarray, model: PoissonGaussian) -> np.ndarray:
    """Per-pixel noise variance estimated from the noisy data: ``a y + b`` (unbiased for ``a x + b``)."""
    return model.a * np.asarray(noisy, np.float64) + model.b


def probe(shape: tuple[int, ...], seed: int | Sequence[int]) -> np.ndarray:
    """Rademacher probe (+-1): the lowest-variance choice for a Monte-Carlo divergence."""
    return np.random.default_rng(seed).integers(0, 2, size=shape).astype(np.float64) * 2.0 - 1.0


def probe_step(noisy: np.ndarray, model: PoissonGaussian) -> float:
    """The finite-difference step: the perturbation ``eps u`` (`direction`, ``u ~ v p``) is about
    `PROBE_STEP` times the noise std, small against the noise (the denoiser stays in its regime)
    and large against float rounding of its output. In 1 / intensity (recorded as ``sure_step``)."""
    v = float(np.mean(noise_variance(noisy, model)))
    return PROBE_STEP / (math.sqrt(v) if v > 0 else max(float(np.std(noisy)), 1e-6))


WHITE = np.pad(np.ones((1, 1)), 2)
"""The correlation kernel of pixel-wise independent noise (`n2sr.correlation.estimate_kernel`'s shape)."""


def noise_kernel(noisy: np.ndarray | Sequence[np.ndarray], scanned: bool = False) -> np.ndarray:
    """The noise correlation kernel SURE assumes for `noisy` (a plane, a stack of equal crops of one,
    (..., Y, X), or a list of crops): `n2sr.correlation.measured_kernel` (along the scan lines only
    if `scanned`), `WHITE` where the pieces are too small."""
    pieces = [np.asarray(z, np.float64) for z in (noisy if isinstance(noisy, (list, tuple)) else [noisy])]
    pieces = [z for z in pieces if min(np.shape(z)[-2:]) >= _MIN_SIDE]
    return measured_kernel(pieces, window=KERNEL_WINDOW, scanned=scanned) if pieces else WHITE


def direction(noisy: np.ndarray, model: PoissonGaussian, p: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``u = C p``: the fitted noise covariance (`kernel` of correlations, variances ``v = a y + b``)
    applied to the probe. The diagonal uses ``v`` itself (the unbiased PG-URE term, negative where
    an offset makes ``b < 0``); the neighbours ``rho_ij sqrt(v_i v_j)`` with ``v`` floored at 0."""
    v = noise_variance(noisy, model)
    u = v * p
    off = np.array(kernel, np.float64)
    off[2, 2] = 0.0
    if np.any(off):
        s = np.sqrt(np.maximum(v, 0.0))
        u += s * ndimage.correlate(s * p, off, mode="constant")
    return u


def sure(noisy: np.ndarray, denoised: np.ndarray, perturbed: np.ndarray, p: np.ndarray, eps: float,
         model: PoissonGaussian) -> Estimate:
    """Monte-Carlo PG-URE of ``denoised = f(noisy)``; ``perturbed = f(noisy + eps u)``,
    ``u = direction(noisy, model, p, kernel)``.

    Arrays of a plane (2-D) get the block standard error of `_mean`; flat ones the pixel one.
    """
    y = np.asarray(noisy, np.float64)
    f = np.asarray(denoised, np.float64)
    trace = p * (np.asarray(perturbed, np.float64) - f) / eps
    return _mean((y - f) ** 2 - noise_variance(y, model) + 2.0 * trace)


def black_box_sure(f: Callable[[np.ndarray], np.ndarray], noisy: np.ndarray, denoised: np.ndarray,
                   model: PoissonGaussian, seed: int, kernel: np.ndarray | None = None) -> tuple[Estimate, float]:
    """`sure` of a denoiser `f` given as a function: one extra call, on ``noisy + eps u``, for
    the noise correlation `kernel` (default: `noise_kernel` of the plane).
    Returns the estimate and the step ``eps`` used."""
    y = np.asarray(noisy, np.float64)
    p = probe(y.shape, seed)
    eps = probe_step(y, model)
    u = direction(y, model, p, noise_kernel(y) if kernel is None else kernel)
    return sure(y, denoised, f(y + eps * u), p, eps, model), eps


def pooled(whole: Estimate, parts: Sequence[Estimate]) -> Estimate:
    """`whole`, the estimate over the pooled pixels of equal-sized crops, with the larger of its
    standard error and the spread of the crops' own estimates (cluster sampling): the crops
    stand for the plane, whose content outside them differs."""
    if len(parts) < 2:
        return whole
    spread = float(np.std([p.mse for p in parts], ddof=1)) / math.sqrt(len(parts))
    return Estimate(whole.mse, max(whole.se, spread))


def cropped_sure(f: Callable[[np.ndarray, Crop], np.ndarray], windows: Sequence[np.ndarray], model: PoissonGaussian,
                 seed: int, parts: Sequence[Crop], scanned: bool = False) -> tuple[Estimate, float]:
    """`black_box_sure` on `parts` of a plane, given their `windows` (the plane's pixels there):
    ``f(window, crop)`` denoises a crop's window and returns its region. Both ``f(y)`` and
    ``f(y + eps u)`` come from the same window, so the divergence sees only the probe (not a
    difference between the window's and the whole plane's output). The probe of crop ``k`` is
    seeded ``(seed, k)``; the step and the noise correlation (`noise_kernel`, mean of the windows',
    `scanned` as there) are the crops'. The terms of all regions are pooled into one mean (see
    `pooled` for its error)."""
    windows = [np.asarray(y, np.float64) for y in windows]
    eps = probe_step(np.concatenate([y.ravel() for y in windows]), model)
    kernel = np.mean([noise_kernel(y, scanned) for y in windows], axis=0)
    arrays = []
    for k, (c, y) in enumerate(zip(parts, windows)):
        p = probe(y.shape, (seed, k))
        perturbed = f(y + eps * direction(y, model, p, kernel), c)
        arrays.append((y[c.inner], np.asarray(f(y, c), np.float64), np.asarray(perturbed, np.float64), p[c.inner]))
    parts_est = [sure(*a, eps, model) for a in arrays]
    sizes = np.array([a[0].size for a in arrays], np.float64)
    whole = Estimate(float(np.dot(sizes, [e.mse for e in parts_est]) / sizes.sum()),
                     float(np.sqrt(np.dot(sizes**2, [e.se**2 for e in parts_est]))) / sizes.sum())
    return pooled(whole, parts_est), eps


def identity_sure(noisy: np.ndarray, model: PoissonGaussian) -> Estimate:
    """SURE of the identity (the noisy input as the estimate): the fitted noise energy."""
    return _mean(noise_variance(noisy, model).ravel())


def held_out(noisy: np.ndarray, predictions: list[np.ndarray], masks: list[np.ndarray],
             model: PoissonGaussian) -> Estimate:
    """Theorem 1: MSE of the held-out pixels' predictions from several random draws.

    Each draw ``j`` gives a prediction of the plane (Noise2SR: the 2x output of the sub-sampled
    input; N2V/N2S: the output of the masked input) and the mask of its held-out pixels (whose
    noise the prediction never saw). Its estimate is the mean over the mask of
    ``(f - y)^2 - (a y + b)``. The result is the mean over draws; its standard error combines the
    spread over draws with the pixel sampling error of one draw (the draws share one noise
    realisation, so the spread alone would understate it).
    """
    y = np.asarray(noisy, np.float64)
    v = noise_variance(y, model)
    per_draw, pixel_se = [], []
    for f, mask in zip(predictions, masks):
        keep = np.asarray(mask, bool)
        if not keep.any():
            raise ValueError("a held-out mask selects no pixel")
        est = _mean((((np.asarray(f, np.float64) - y) ** 2) - v)[keep])
        per_draw.append(est.mse)
        pixel_se.append(est.se)
    if not per_draw:
        return NAN
    draws = np.asarray(per_draw)
    spread = float(draws.std(ddof=1)) / math.sqrt(len(draws)) if len(draws) > 1 else math.nan
    return Estimate(float(draws.mean()), math.sqrt((0.0 if math.isnan(spread) else spread**2)
                                                   + float(np.mean(pixel_se)) ** 2))


def record(model: PoissonGaussian, energy: float, sure_estimate: Estimate, step: float, held: Estimate = NAN,
           kind: str = "", draws: int = 0, pixels: int | None = None) -> dict[str, float | str | int | None]:
    """One plane's estimates as the denoising steps store them (output attributes ``estimates``,
    JSON: a missing number is null) and `n2sr.steps.evaluate` reads them; `energy` is the plane's
    fitted noise energy ``mean(a y + b)``, `pixels` how many pixels the estimates were computed on
    (the whole plane's or its `crops`')."""
    numbers = {"noise_a": model.a, "noise_b": model.b, "noise_energy": energy,
               "sure_mse": sure_estimate.mse, "sure_se": sure_estimate.se,
               "sure_step": step, "held_out_mse": held.mse, "held_out_se": held.se}
    return {**{k: float(v) if math.isfinite(v) else None for k, v in numbers.items()},
            "held_out_kind": kind, "held_out_draws": draws, "pixels": pixels}


def fit(noisy: np.ndarray | list[np.ndarray], kernel: np.ndarray | None = None,
        scanned: bool = False) -> PoissonGaussian | None:
    """The blind noise fit of a plane (or of crops of one, pooled), scaled to the spectrum's
    noise energy (`calibrated`), or None where it allows none (constant or saturated): then there
    is no estimate, and the image is still denoised and scored. `kernel`: the plane's
    `noise_kernel`, where the caller has it; `scanned`: point-scanning noise (`calibrated`)."""
    try:
        kernel = noise_kernel(noisy, scanned) if kernel is None else kernel
        tile = SHAPE_TILE if Autocorrelation.from_kernel(kernel).widefield else None  # see the fit's step 5
        return calibrated(estimate_poisson_gaussian(noisy, tile=tile), noisy, kernel, scanned)
    except ValueError:
        return None


def calibrated(model: PoissonGaussian, noisy: np.ndarray | list[np.ndarray],
               kernel: np.ndarray | None = None, scanned: bool = False) -> PoissonGaussian:
    """`model` (its shape ``a x + b`` from the level sets) scaled so that its mean variance over
    `noisy` is the noise band's (`n2sr.spectrum.band_energy`, for `noise_kernel`'s correlation).

    Both estimates subtract that energy, a strong denoiser's MSE is a few % of it: the level-set
    fit's 1.5-5 % errors became 1-2 dB. Unchanged where there is no spectrum or no energy. `scanned`:
    read from the scan-line fit's band (`spectrum.SHAPE_BAND`), which texture reaches less."""
    pieces = noisy if isinstance(noisy, list) else [noisy]
    fitted = float(np.mean(np.concatenate([noise_variance(z, model).ravel() for z in pieces])))
    try:
        energy = spectrum.band_energy(pieces, noise_kernel(pieces, scanned) if kernel is None else kernel,
                                      spectrum.SHAPE_BAND if scanned else spectrum.ENERGY_BAND)
    except ValueError:
        return model
    if not (fitted > 0 and energy > 0):
        return model
    scale = energy / fitted
    return PoissonGaussian(model.a * scale, model.b * scale)


def unavailable() -> dict[str, float | str | int | None]:
    """The stored record of a plane without estimates (no noise fit): every number null."""
    return record(PoissonGaussian(math.nan, math.nan), math.nan, NAN, math.nan)


def from_record(entry: dict, prefix: str) -> Estimate:
    """The `prefix` ("sure" or "held_out") estimate of a stored record; NaN where null."""
    mse, se = entry.get(f"{prefix}_mse"), entry.get(f"{prefix}_se")
    return Estimate(math.nan if mse is None else float(mse), math.nan if se is None else float(se))


COLUMNS = ("noise_a", "noise_b", "noise_energy", "input_snr_db",
           "est_mse_sure", "est_mse_sure_se", "est_psnr_sure", "est_psnr_sure_lo", "est_psnr_sure_hi",
           "est_mse_held_out", "est_mse_held_out_se", "est_psnr_held_out", "est_psnr_held_out_lo",
           "est_psnr_held_out_hi", "held_out_kind", "est_pixels", "residual_ratio", "residual_lag1", "noise_lag1", "residual_flag")
"""Per-image CSV columns of the estimates (documented in config/README.md, "Reference-free estimates")."""


def columns(noisy: np.ndarray | None, output: np.ndarray, entry: dict | None, data_range: float, *,
            identity: bool, pixels: int = 0, scanned: bool = False) -> dict[str, float | str]:
    """The `COLUMNS` of one plane: `output` denoised from `noisy` (None: unknown, so only the
    stored `entry` of the denoising step is used), or the noisy input itself (`identity`).

    The noise model is the stored one (fitted by the denoising step on the same plane) or fitted
    here; PSNRs use `data_range` (the fixed convention's). The standard errors add the noise
    fit's (`with_fit_error`) to the stored ones. A plane of more than `pixels` (0: no limit) is
    measured here on its `crops` (placed as the denoising step's are), so that the
    float copies these columns take stay the size of the crops, not of the plane. `scanned`: a
    point-scanning microscope's noise (`fit`), as the denoising step was told.
    """
    out: dict[str, float | str] = dict.fromkeys(COLUMNS, math.nan)
    out.update(held_out_kind="", residual_flag="")
    if noisy is not None and (near := crops(np.shape(noisy)[-2:], pixels, 0)) is not None:
        noisy, output = (np.stack([np.asarray(a[y0:y1, x0:x1], np.float64) for (y0, x0, y1, x1), _ in near])
                         for a in (noisy, output))
    if entry is not None and entry.get("noise_a") is not None:
        model = PoissonGaussian(float(entry["noise_a"]), float(entry["noise_b"]))
    elif noisy is not None and (fitted := fit(list(noisy) if np.ndim(noisy) == 3 else noisy,
                                              scanned=scanned)) is not None:
        model = fitted
    else:
        return out
    energy = float(np.mean(noise_variance(noisy, model))) if noisy is not None else float(
        entry.get("noise_energy") or math.nan)
    out.update(noise_a=model.a, noise_b=model.b, noise_energy=energy)
    if noisy is not None:
        out["input_snr_db"] = input_snr_db(noisy, model)
    sure_est = identity_sure(noisy, model) if identity and noisy is not None else (
        from_record(entry, "sure") if entry is not None else NAN)
    held = from_record(entry, "held_out") if entry is not None and not identity else NAN
    for name, est in (("sure", sure_est), ("held_out", held)):
        est = with_fit_error(est, energy)
        psnr, lo, hi = est.psnr(data_range)
        out.update({f"est_mse_{name}": est.mse, f"est_mse_{name}_se": est.se, f"est_psnr_{name}": psnr,
                    f"est_psnr_{name}_lo": lo, f"est_psnr_{name}_hi": hi})
    if entry is not None and not identity:
        out["held_out_kind"] = entry.get("held_out_kind") or ""
        out["est_pixels"] = math.nan if entry.get("pixels") is None else float(entry["pixels"])
    elif identity and noisy is not None:
        out["est_pixels"] = float(np.size(noisy))
    if noisy is not None and not identity and min(np.shape(noisy)[-2:]) >= _MIN_SIDE:
        noise_lag1 = Autocorrelation.from_kernel(noise_kernel(noisy, scanned)).lag1
        check = residual_check(noisy, output, model, noise_lag1)
        out.update(residual_ratio=check.variance_ratio, residual_lag1=check.lag1, noise_lag1=noise_lag1,
                   residual_flag=check.flag)
    return out


def with_fit_error(est: Estimate, energy: float) -> Estimate:
    """`est` with the noise fit's error (`NOISE_FIT_RSE` of the noise `energy`) added to its
    standard error; unchanged where the energy is unknown."""
    if math.isnan(energy):
        return est
    return Estimate(est.mse, math.sqrt((0.0 if math.isnan(est.se) else est.se**2) + (NOISE_FIT_RSE * energy) ** 2))


class Residual(NamedTuple):
    """Does ``noisy - denoised`` look like the fitted noise?"""

    variance_ratio: float  # mean (y - f)^2 / mean (a f + b)
    lag1: float  # lag-1 autocorrelation of the residual
    flag: str  # "" when fine, else what is off ("signal removed", "noise left", "structured")


def residual_check(noisy: np.ndarray, denoised: np.ndarray, model: PoissonGaussian,
                   noise_lag1: float = 0.0) -> Residual:
    """Residual variance against the fitted ``a f + b`` and its lag-1 autocorrelation against the
    noise's own (`noise_lag1`, e.g. from `noise_kernel` of the plane)."""
    y = np.asarray(noisy, np.float64)
    f = np.asarray(denoised, np.float64)
    expected = float(np.mean(noise_variance(f, model)))
    ratio = float(np.mean((y - f) ** 2)) / expected if expected > 0 else math.nan
    lag1 = noise_autocorrelation(y, f).lag1
    flags = []
    if not ratio >= RESIDUAL_RATIO[0]:
        flags.append("noise left")
    elif ratio > RESIDUAL_RATIO[1]:
        flags.append("signal removed")
    if abs(lag1 - noise_lag1) > RESIDUAL_LAG1:
        flags.append("structured")
    return Residual(ratio, lag1, "; ".join(flags))


def input_snr_db(noisy: np.ndarray, model: PoissonGaussian) -> float:
    """``20 log10(mean y / sqrt(mean(a y + b)))``: the mean signal over the mean noise std."""
    v = float(np.mean(noise_variance(noisy, model)))
    m = float(np.mean(noisy))
    return 20.0 * math.log10(m / math.sqrt(v)) if v > 0 and m > 0 else math.nan


def _mean(terms: np.ndarray) -> Estimate:
    """Mean and standard error of per-pixel terms. For a plane (2-D) the error is also taken from
    the spread of `SE_BLOCK`-pixel block means, and the larger kept: neighbouring terms are
    correlated (the output smooths the noise, the noise itself may be correlated), so the pixel
    standard error alone reads too small."""
    t = np.asarray(terms, np.float64)
    n = t.size
    se = float(t.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    if t.ndim == 2 and min(t.shape) >= 2 * SE_BLOCK:
        by, bx = t.shape[0] // SE_BLOCK, t.shape[1] // SE_BLOCK
        blocks = t[:by * SE_BLOCK, :bx * SE_BLOCK].reshape(by, SE_BLOCK, bx, SE_BLOCK).mean(axis=(1, 3))
        se = max(se, float(blocks.std(ddof=1)) / math.sqrt(blocks.size))
    return Estimate(float(t.mean()), se)
