"""Poisson-Gaussian noise: the paper's synthetic noise and a blind model estimate.

Fluorescence detectors count photons (Poisson, variance proportional to the signal) and add
electronic noise (Gaussian), so a noisy plane ``y`` of a clean plane ``x`` follows::

    E[y] = x,    Var[y] = a * x + b                                  (Poisson-Gaussian model)

``a`` is the gain (intensity units per photon) and ``b`` the signal-independent variance.
``b`` may be negative: a dark offset ``mu`` (zero photons read as ``mu``, as on FMD, where the
background sits at ~3 grey levels) gives ``Var = a (x - mu) + s**2``, i.e. ``b = s**2 - a mu``.

What lives here, all pure numerics on arrays (no I/O, randomness only via a Generator):

* `poisson_gaussian`, `quantize`: the one noise generator and quantiser, used for the demo
  archive and for the paper's synthetic noise on 0-255 images (its Sec. 3.1; lambda is
  defined by `paper_noise_model`); `correlated_poisson_gaussian` makes it spatially
  correlated (widefield-like) with a stated lag-1 correlation.
* `estimate_poisson_gaussian`: ``(a, b)`` from the noisy plane alone, so that BM3D (and any
  variance-stabilised method) can run on archives without references.

The generalised Anscombe transform of such noise is in `n2sr.gat`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

FULL_SCALE = 255.0  # the paper's images are 8-bit; lambda is "photons at this intensity"
_CURVATURE_K = 2.0  # smooth-pixel threshold on the Laplacian, in units of its noise std
_MIN_PIXELS = 300  # fewer pixels cannot support a robust fit over several level sets
_MIN_TILES = 8  # fewer tiles fall back to level sets (`estimate_poisson_gaussian`'s `tile`)


class PoissonGaussian(NamedTuple):
    """Noise model ``Var[y] = a * E[y] + b`` (a tuple, so ``a, b = model`` works)."""

    a: float
    b: float

    def variance(self, x: np.ndarray | float) -> np.ndarray | float:
        """Noise variance at clean intensity `x` (same units as the image)."""
        return self.a * np.asarray(x, dtype=np.float64) + self.b


# ---------------------------------------------------------------------------------------------
# Drawing noise
# ---------------------------------------------------------------------------------------------


def paper_noise_model(lam: float | None = None, sigma: float = 0.0) -> PoissonGaussian:
    """``(a, b)`` of the synthetic noise: ``a = 255 / lam`` (0 without Poisson), ``b = sigma**2``.

    The paper does not define lambda; we use the usual photon-count scaling, lambda = the
    expected photon count at full scale (255), so a pixel of intensity ``x`` collects
    ``lam * x / 255`` photons and lower lambda means more noise::

        y = Poisson(lam * x / 255) * 255 / lam  [+ N(0, sigma**2)]
        E[y] = x,   Var[y] = (255 / lam) * x  [+ sigma**2]
    """
    if lam is not None and lam <= 0:
        raise ValueError(f"lam must be > 0 (photons at full scale), got {lam}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    return PoissonGaussian(0.0 if lam is None else FULL_SCALE / lam, float(sigma) ** 2)


def poisson_gaussian(clean: np.ndarray, model: PoissonGaussian, rng: np.random.Generator) -> np.ndarray:
    """One noisy capture of `clean`: ``a * Poisson(clean / a) + N(0, b)``, the one noise generator.

    ``E[y] = clean`` and ``Var[y] = a * clean + b``: ``clean / a`` photons are counted (shot
    noise) and scaled back to intensity units, then signal-independent Gaussian noise of
    variance ``b`` (read noise) is added. ``a = 0`` leaves out the Poisson part, ``b = 0`` the
    Gaussian one (no random numbers are drawn for a part that is left out). No clipping or
    rounding: `quantize` does that, as a camera file would.

    Parameters
    ----------
    clean : ndarray (...), real, >= 0 where ``a > 0``; intensities in the units of the model
    model : PoissonGaussian with ``a >= 0`` and ``b >= 0`` (e.g. `paper_noise_model`)
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, same shape as `clean`, float64
    """
    a, b = float(model.a), float(model.b)
    if a < 0 or b < 0:
        raise ValueError(f"noise model needs a >= 0 and b >= 0 to be drawn, got a={a:g}, b={b:g}")
    x = np.asarray(clean, dtype=np.float64)
    if a > 0:
        if x.size and x.min() < 0:
            raise ValueError(f"Poisson noise needs clean >= 0 (photon counts), found minimum {x.min():g}")
        y = rng.poisson(x / a) * a
    else:
        y = x.copy()
    if b > 0:
        y += rng.normal(0.0, np.sqrt(b), size=x.shape)
    return y


MAX_CORRELATION = float(np.sqrt(0.5))  # lag-1 correlation of [a, 1, a] at its largest (a = 1/sqrt(2))


def correlation_kernel(rho: float) -> np.ndarray:
    """1-D kernel ``[a, 1, a] / sqrt(1 + 2 a**2)`` whose filtered white noise has lag-1 correlation `rho`.

    Filtering white noise of variance ``v`` along both axes with this unit-norm kernel keeps the
    variance ``v`` and gives the separable autocorrelation ``r(dy) r(dx)`` with ``r(0) = 1``,
    ``r(1) = 2a / (1 + 2a**2) = rho``, ``r(2) = a**2 / (1 + 2a**2)`` and 0 beyond: horizontal and
    vertical neighbours correlate ``rho``, diagonal ones ``rho**2``, pixels two apart
    ``a**2 / (1 + 2a**2)`` (0.118 for rho 0.6, 0.024 for 0.3), three apart 0. ``a`` is the smaller root
    of ``2 rho a**2 - 2a + rho = 0``; ``rho`` must be in ``[0, 1/sqrt(2)]``.
    """
    if not 0.0 <= rho <= MAX_CORRELATION:
        raise ValueError(f"correlation must be in [0, {MAX_CORRELATION:.4f}] for a 3-tap kernel, got {rho}")
    a = 0.0 if rho == 0 else (1.0 - np.sqrt(1.0 - 2.0 * rho**2)) / (2.0 * rho)
    return np.array([a, 1.0, a]) / np.sqrt(1.0 + 2.0 * a**2)


def correlated_poisson_gaussian(clean: np.ndarray, model: PoissonGaussian, rho: float,
                                rng: np.random.Generator) -> np.ndarray:
    """`poisson_gaussian` noise made spatially correlated: lag-1 correlation `rho` along Y and X.

    Widefield cameras (and W2S, FMD's widefield sets) show noise correlated between neighbouring
    pixels, which lets the 2x2 sub-sampler's input pixel predict the noise of its targets. Here the
    noise ``n = poisson_gaussian(clean) - clean`` is filtered by `correlation_kernel` along both
    axes. The noise is drawn on `clean` padded by one reflected pixel and filtered without
    padding, so every pixel gets the same statistics. Where the clean image is locally constant,
    ``E[y] = clean``, ``Var[y] = a clean + b`` and the correlations are those of
    `correlation_kernel`; across edges the variance is the kernel-weighted mix of the neighbours'.
    ``rho = 0`` is `poisson_gaussian` exactly (same random numbers).
    """
    x = np.asarray(clean, dtype=np.float64)
    kernel = correlation_kernel(rho)
    if rho == 0:
        return poisson_gaussian(x, model, rng)
    pad = [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)]
    padded = np.pad(x, pad, mode="reflect")
    noise = poisson_gaussian(padded, model, rng) - padded
    for axis in (-2, -1):
        noise = ndimage.convolve1d(noise, kernel, axis=axis, mode="constant")
    return x + noise[..., 1:-1, 1:-1]


def quantize(image: np.ndarray, dtype: np.dtype | type | str, scale: float = 1.0) -> np.ndarray:
    """``image * scale`` rounded half up, clipped to the integer `dtype`'s range and cast: the one
    quantiser, for what a camera would write."""
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.floor(np.asarray(image, np.float64) * scale + 0.5), info.min, info.max).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Blind estimation of (a, b)
# ---------------------------------------------------------------------------------------------


def estimate_poisson_gaussian(img: np.ndarray | list[np.ndarray], *, window: int = 5,
                              n_bins: int = 24, tile: int | None = None) -> PoissonGaussian:
    """Fit ``Var = a * x + b`` to one noisy plane, without a reference; or to a list of pieces of
    one plane (its crops, so that a huge plane need not be read whole), their samples pooled.

    A variant of Foi et al. (2008, "Practical Poissonian-Gaussian noise modeling and fitting
    for single-image raw-data", IEEE TIP 17(10)), tuned on FMD (``benchmarks/noise_estimation.py``):

    1. Local mean ``m`` = `window` x `window` box mean; residual ``e = (y - m) / sqrt(1 - 1/w**2)``
       has variance ``a x + b`` where ``x`` is locally constant. A residual against a box mean,
       rather than Foi's finest wavelet detail (~ a 2x2 high-pass), because FMD's noise is
       correlated between neighbouring pixels (correlation 0.1-0.25 along x), which makes
       pixel-scale high-passes miss 10-35 % of the variance; 5x5 balances that against
       texture leaking into ``e`` in larger windows.
    2. Smooth regions only: the box mean cancels a linear ramp, so what leaks signal into
       ``e`` is curvature. A first fit on all unsaturated pixels gives the noise level that
       the Laplacian of ``m`` is compared with; pixels above 2x its noise std, and windows
       touching saturated pixels (the plane's maximum, repeated), are left out of the
       second, final fit.
    3. Level sets: equal-count bins of ``m``; per bin the mean of ``m`` and the sample
       variance of ``e``. A sample variance, not Foi's MAD: at FMD's photon counts (< 1
       photon per pixel in the background) the residuals are discrete and skewed, and the
       MAD of such data is not proportional to the standard deviation.
    4. Robust weighted line fit over the bins (`fit_variance_line`): weights ``n / var**2``
       (the sampling variance of a variance), Huber-downweighting of bins still carrying
       texture, ``a >= 0``.

    5. With `tile`, the final fit groups the smooth pixels by position, in `tile` x `tile` tiles,
       instead of by ``m``: for spatially correlated (widefield-like) noise. ``m`` is then a
       noisy ruler (its noise variance is the window's sum of correlations over ``window**2``
       times white noise's: 4.4x at lag-1 0.6), the level sets mix intensities and the line
       flattens (regression dilution; on the reference-free benchmark's lag-1 0.6 crops, whose
       intensities span little, ``a`` read 1.3x low and ``b`` 7x high after `n2sr.estimate`'s
       energy scaling). A tile's mean intensity is known to a fraction of a grey level, and as
       the variance is linear in ``x`` a tile's mean variance is ``a mean(x) + b`` whatever it
       holds. Level sets where under `_MIN_TILES` tiles have a quarter of their pixels smooth.

    Assumptions: noise independent of position given the intensity, zero-mean given ``x``;
    enough flat area at several intensities; ``b`` is returned as fitted (negative for an
    offset) but raised so that the variance is >= 0 down to the darkest level present.

    Parameters
    ----------
    img : ndarray (Y, X), any real dtype, Y, X >= 4 * window; or a list of them (saturation is
        then the largest value over all of them)
    window : int, odd >= 3
    n_bins : int >= 3
        Level sets; fewer on small images so that each holds >= 100 pixels.
    tile : int, optional
        Tile side for step 5 (correlated noise); None: level sets.

    Returns
    -------
    PoissonGaussian
        ``(a, b)`` in the units of `img` (``a`` in intensity per photon, ``b`` intensity**2).
    """
    planes = [np.asarray(z, dtype=np.float64) for z in (img if isinstance(img, list) else [img])]
    if not planes:
        raise ValueError("no plane to fit")
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 3, got {window}")
    if n_bins < 3:
        raise ValueError(f"n_bins must be >= 3 to fit a line robustly, got {n_bins}")
    for z in planes:
        if z.ndim != 2:
            raise ValueError(f"expected a 2-D plane (Y, X), got shape {z.shape}")
        if min(z.shape) < 4 * window:
            raise ValueError(f"plane {z.shape} too small for window {window}: need both sides >= {4 * window}")
        if not np.isfinite(z).all():
            raise ValueError("plane has NaN or inf values; mask or fill them first")
    top = max(float(z.max()) for z in planes)
    m = [ndimage.uniform_filter(z, window, mode="reflect") for z in planes]
    e = [(z - mz) / np.sqrt(1.0 - 1.0 / window**2) for z, mz in zip(planes, m)]
    unsaturated = [_unsaturated(z, window, top) for z in planes]
    count = sum(int(u.sum()) for u in unsaturated)
    if count < _MIN_PIXELS:
        raise ValueError(
            f"only {count} pixels are away from saturated ones (value {top:g}, repeated); "
            "the noise cannot be measured on a saturated or constant plane"
        )
    model = _fit(m, e, unsaturated, n_bins)
    # Second pass on smooth pixels. The threshold uses the first fit's variance, not a local
    # measurement: thresholding on the local noise itself would keep noisier-than-average
    # pixels and bias the variance up.
    smooth = [u & _flat(mz, np.maximum(model.variance(mz), 0.0), window) for u, mz in zip(unsaturated, m)]
    if sum(int(k.sum()) for k in smooth) >= _MIN_PIXELS:  # heavily textured planes keep the first-pass fit
        tiled = _tile_sets(planes, e, smooth, tile) if tile else None
        model = fit_variance_line(*tiled) if tiled is not None else _fit(m, e, smooth, n_bins)
    return model


def _tile_sets(planes: list[np.ndarray], e: list[np.ndarray], keep: list[np.ndarray], tile: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per `tile` x `tile` tile with a quarter of its pixels kept: the kept pixels' mean
    intensity, mean squared residual and count (`estimate_poisson_gaussian`, step 5); None for
    fewer than `_MIN_TILES` such tiles."""
    means, squares, counts = [], [], []
    for z, ez, kz in zip(planes, e, keep):
        for r in range(0, z.shape[0] - tile + 1, tile):
            for c in range(0, z.shape[1] - tile + 1, tile):
                k = kz[r:r + tile, c:c + tile]
                if k.sum() * 4 >= tile * tile:
                    means.append(z[r:r + tile, c:c + tile][k].mean())
                    squares.append((ez[r:r + tile, c:c + tile][k] ** 2).mean())
                    counts.append(int(k.sum()))
    if len(means) < _MIN_TILES:
        return None
    return np.array(means), np.array(squares), np.array(counts, dtype=np.int64)


def _fit(m: list[np.ndarray], e: list[np.ndarray], keep: list[np.ndarray], n_bins: int) -> PoissonGaussian:
    """The line through the level sets of the `keep` pixels of every plane, pooled."""
    means, variances, counts = level_set_variances(np.concatenate([mz[k] for mz, k in zip(m, keep)]),
                                                   np.concatenate([ez[k] ** 2 for ez, k in zip(e, keep)]),
                                                   n_bins=n_bins)
    return fit_variance_line(means, variances, counts)


def _unsaturated(z: np.ndarray, window: int, top: float) -> np.ndarray:
    """Pixels whose window holds no saturated pixel (value `top`, the maximum, repeated)."""
    saturated = z == top
    if saturated.sum() <= 1:
        return np.ones(z.shape, bool)
    return ~ndimage.binary_dilation(saturated, np.ones((window, window), bool))


def _flat(m: np.ndarray, variance: np.ndarray, window: int) -> np.ndarray:
    """Pixels where the local mean's curvature is within noise: ``e`` is pure noise there."""
    lap_kernel = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    lap = ndimage.convolve(m, lap_kernel, mode="reflect")
    # Noise std of ``lap`` for white noise of unit variance: the norm of box * Laplacian.
    box = np.zeros((window + 2, window + 2))
    box[1:-1, 1:-1] = 1.0 / window**2
    lap_noise = np.sqrt((ndimage.convolve(box, lap_kernel, mode="constant") ** 2).sum())
    return np.abs(lap) <= _CURVATURE_K * lap_noise * np.sqrt(variance)


def level_set_variances(
    means: np.ndarray, squares: np.ndarray, *, n_bins: int = 24, min_count: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-count bins of `means`; per bin: mean of `means`, mean of `squares`, count.

    Shared by the blind estimator and the reference-based "truth" in the benchmark, so both
    sides of a comparison bin the same way.

    Parameters
    ----------
    means : ndarray (N,), local intensity per sample
    squares : ndarray (N,), squared zero-mean noise sample (its mean is the variance)
    n_bins : int >= 3
    min_count : int
        Fewer samples give too noisy a variance; bins are merged down to ``N // min_count``.

    Returns
    -------
    (bin_means, bin_variances, bin_counts) : three ndarray (K,), float64, float64, int64
    """
    means = np.ravel(means).astype(np.float64)
    squares = np.ravel(squares).astype(np.float64)
    if means.size == 0 or means.size != squares.size:
        raise ValueError(f"need as many squares as means, and some: got {means.size} and {squares.size}")
    k = max(1, min(n_bins, means.size // min_count))
    order = np.argsort(means, kind="stable")
    groups = np.array_split(order, k)
    # Equal counts by rank can split one grey level between bins; that is harmless here
    # (each bin still averages samples of nearly the same intensity).
    bin_means = np.array([means[g].mean() for g in groups])
    bin_vars = np.array([squares[g].mean() for g in groups])
    counts = np.array([g.size for g in groups], dtype=np.int64)
    return bin_means, bin_vars, counts


def fit_variance_line(means: np.ndarray, variances: np.ndarray, counts: np.ndarray) -> PoissonGaussian:
    """Weighted, outlier-robust fit of ``variances = a * means + b`` with ``a >= 0``.

    A bin's variance estimate has standard error ``~ var * sqrt(2 / n)``, so bins are
    weighted by ``n / var**2`` (iterated with the fitted variance, floored at 5 % of the
    median bin variance so that a near-zero fit cannot take all the weight); a Huber weight
    on the standardised residual keeps a bin contaminated by edges from pulling the line.
    ``b`` is raised, if needed, so that the model variance is >= 0 at the darkest bin.

    Parameters
    ----------
    means, variances : ndarray (K,), float
    counts : ndarray (K,), int > 0

    Returns
    -------
    PoissonGaussian
    """
    x = np.asarray(means, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no level sets to fit; the plane has too few smooth pixels")
    floor = 0.05 * max(float(np.median(v)), 1e-12)
    fitted = np.maximum(v, floor)
    robust = np.ones_like(v)
    for _ in range(10):  # reweighting settles in a few steps
        w = robust * n / np.maximum(fitted, floor) ** 2
        a, b = _weighted_line(x, v, w)
        fitted = a * x + b
        z = (v - fitted) * np.sqrt(n / 2.0) / np.maximum(fitted, floor)
        robust = np.minimum(1.0, 3.0 / np.maximum(np.abs(z), 1e-12))  # Huber, c = 3
    b = max(b, -a * float(x.min()))
    return PoissonGaussian(float(a), float(b))


def _weighted_line(x: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least squares of ``v = a x + b``; a constant when the slope would be < 0."""
    if x.size >= 2 and np.ptp(x) > 0:
        sw = w.sum()
        xm, vm = (w * x).sum() / sw, (w * v).sum() / sw
        a = float((w * (x - xm) * (v - vm)).sum() / (w * (x - xm) ** 2).sum())
        if a >= 0:
            return a, float(vm - a * xm)
    return 0.0, float(np.average(v, weights=w))
