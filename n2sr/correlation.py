"""Spatial autocorrelation of noise: measured against a reference, or estimated from one noisy plane.

Noise2SR's 2x2 sub-sampler assumes pixel-wise independent noise: the input pixel of a cell must
say nothing about the noise of the three target pixels next to it. Widefield cameras break that
(on a W2S-like widefield frame neighbours correlate ~0.57), and then the network learns to
reproduce part of the noise. `n2sr.nn.decorrelate` widens the sub-sampler; this module measures
how much correlation there is, so the stride can be chosen from the data (``train.stride: auto``).

* `noise_autocorrelation`: correlation coefficients of ``noisy - reference`` at lags 1
  (vertical, horizontal), diagonal and 2: the truth, where a reference exists.
* `estimate_autocorrelation`: the same numbers from the noisy plane alone. The residual
  ``r = y - S_w(y)``, ``S_w`` the local quadratic least-squares fit over ``w x w`` (a 2-D
  Savitzky-Golay smoother, which unlike a box mean also cancels curvature), removes the signal
  up to texture; its autocovariance is the noise's autocovariance ``C`` convolved with the
  autocorrelation ``A`` of the kernel ``delta - S_w``,
  a known linear map, so ``C`` on the lags ``|dy|, |dx| <= 2`` is recovered by least squares from
  the residual's autocovariance on the same lags (exact for stationary noise whose correlation
  vanishes beyond distance 2, e.g. `n2sr.noise.correlated_poisson_gaussian`). Validated against
  `noise_autocorrelation` in ``benchmarks/noise_correlation.py``.
* `estimate_kernel`: the same estimate as a 5 x 5 correlation kernel (every lag ``|dy|, |dx| <= 2``).
* `measured_kernel`: the kernel used from a noisy plane alone (SURE's covariance in
  `n2sr.estimate`, `train.stride: auto`): read from the spectrum's noise band, where texture does
  not reach (`n2sr.spectrum`), and from the image domain only for widefield-like noise.
* `choose_stride`: the sub-sampler stride for a measured correlation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from n2sr.spectrum import LAGS, SCAN_LAGS, band_correlation

STRIDES = (2, 3, 4)
# Noise whose lag-1 correlation reads from this in the spectrum's noise band (`measured_kernel`) is
# widefield-like: it gets the image-domain kernel and a wider stride. The band reads 0.28-0.30 for a
# true 0.3 and 0.45-0.48 for 0.6 on four FMD references, 0-0.035 on white noise there, 0 on W2S and
# 0.03-0.17 on FMD's real confocal captures (benchmarks/results/noise_correlation.md). Measured at equal
# iterations on one FMD reference: stride 3 beats 2 by 2.4 dB at lag-1 correlation 0.3 and by 6.2 dB
# at 0.6, beats 4 by 0.9 dB at 0.6 (lag 2: 0.12), but loses 2.0 dB on white noise and 1.6 dB on the
# real BPAE_R capture (band 0.17). The image-domain estimate read texture as correlation (0.33-0.42
# on BPAE_G/R), so its threshold had to sit at 0.5, which left true 0.3 at stride 2.
WIDEFIELD_LAG1 = 0.22
LAG2_THRESHOLD = 0.25  # stride 4 from this lag-2 correlation (image domain; not measured: no such noise was tested)
_WINDOW = 7
_LAGS = [(dy, dx) for dy in range(0, 3) for dx in range(-2, 3) if (dy, dx) > (0, 0)] + [(0, 0)]
"""Half of the lags ``|dy|, |dx| <= 2`` (the other half by symmetry), and lag 0."""


class Autocorrelation(NamedTuple):
    """Correlation coefficients of the noise with its neighbours (1 at lag 0)."""

    vertical: float  # (1, 0)
    horizontal: float  # (0, 1)
    diagonal: float  # mean of (1, 1) and (1, -1)
    lag2: float  # mean of (2, 0) and (0, 2)

    @property
    def lag1(self) -> float:
        """Mean of the vertical and horizontal neighbours' correlation."""
        return 0.5 * (self.vertical + self.horizontal)

    @property
    def widefield(self) -> bool:
        """Neighbours correlated like widefield noise (lag-1 from `WIDEFIELD_LAG1`): where the
        wider sub-sampler, whitening, the image-domain kernel and the tiled noise fit apply."""
        return self.lag1 >= WIDEFIELD_LAG1

    @classmethod
    def from_kernel(cls, k: np.ndarray) -> Autocorrelation:
        """The summary of a 5 x 5 correlation kernel (`estimate_kernel`)."""
        return cls(float(k[3, 2]), float(k[2, 3]), 0.5 * float(k[3, 3] + k[3, 1]), 0.5 * float(k[4, 2] + k[2, 4]))

    def as_dict(self) -> dict[str, float]:
        return {**self._asdict(), "lag1": self.lag1}


def _autocovariance(z: np.ndarray, lags: list[tuple[int, int]]) -> np.ndarray:
    """Mean of ``z[p] z[p + lag]`` over the pixels where both exist, per lag; `z` (..., Y, X)."""
    ny, nx = z.shape[-2:]
    out = []
    for dy, dx in lags:  # dy >= 0
        a = z[..., : ny - dy, max(0, -dx): nx - max(0, dx)]
        b = z[..., dy:, max(0, dx): nx - max(0, -dx)]
        out.append(float(np.mean(a * b)))
    return np.array(out)


def _kernel(cov: dict[tuple[int, int], float]) -> np.ndarray:
    """The 5 x 5 correlation kernel (centre 1, point-symmetric) of autocovariances on `_LAGS`."""
    k = np.zeros((5, 5))
    for (dy, dx), c in cov.items():
        k[2 + dy, 2 + dx] = k[2 - dy, 2 - dx] = c / cov[(0, 0)]
    return k


def _summary(cov: dict[tuple[int, int], float]) -> Autocorrelation:
    return Autocorrelation.from_kernel(_kernel(cov))


def noise_autocorrelation(noisy: np.ndarray, reference: np.ndarray) -> Autocorrelation:
    """Autocorrelation of ``noisy - reference`` (mean removed), over all planes of (..., Y, X)."""
    noise = np.asarray(noisy, np.float64) - np.asarray(reference, np.float64)
    noise = noise - noise.mean(axis=(-2, -1), keepdims=True)
    return _summary(dict(zip(_LAGS, _autocovariance(noise, _LAGS))))


def _smoother(window: int) -> np.ndarray:
    """The `window` x `window` kernel giving the centre value of the local quadratic least-squares fit."""
    h = window // 2
    y, x = (g.ravel().astype(np.float64) for g in np.mgrid[-h:h + 1, -h:h + 1])
    design = np.stack([np.ones_like(y), y, x, y * y, x * x, x * y], axis=1)
    return np.linalg.pinv(design)[0].reshape(window, window)


def _residual_kernel(window: int) -> np.ndarray:
    """``delta - smoother``: what the residual is of the noisy plane."""
    k = -_smoother(window)
    k[window // 2, window // 2] += 1.0
    return k


def estimate_autocorrelation(noisy: np.ndarray, *, window: int = _WINDOW) -> Autocorrelation:
    """Noise autocorrelation of one noisy plane (or a stack, (..., Y, X)) without a reference.

    See the module docstring: residual against a local quadratic fit, its autocovariance on the
    lags ``|dy|, |dx| <= 2``, and the noise autocovariance solved from the known mixing. Signal
    texture that survives the box mean reads as positive correlation, so heavily textured planes
    overestimate it; flat fluorescence backgrounds dominate microscopy planes.
    """
    return _summary(_estimated_covariance(noisy, window))


def estimate_kernel(noisy: np.ndarray, *, window: int = _WINDOW) -> np.ndarray:
    """`estimate_autocorrelation` as a 5 x 5 correlation kernel: entry ``(2 + dy, 2 + dx)`` is the
    noise's correlation at lag ``(dy, dx)`` (1 at the centre, zero beyond distance 2)."""
    return _kernel(_estimated_covariance(noisy, window))


def _estimated_covariance(noisy: np.ndarray, window: int) -> dict[tuple[int, int], float]:
    z = np.asarray(noisy, np.float64)
    if z.shape[-1] < 4 * window or z.shape[-2] < 4 * window:
        raise ValueError(f"plane {z.shape[-2:]} too small for window {window}: need both sides >= {4 * window}")
    k = _residual_kernel(window)
    r = ndimage.correlate(z, k.reshape((1,) * (z.ndim - 2) + k.shape), mode="reflect")
    h = window // 2
    r = r[..., h:-h, h:-h]  # drop the border, where reflection changes the mixing
    measured = _autocovariance(r - r.mean(axis=(-2, -1), keepdims=True), _LAGS)
    c = 2 * window  # autocorrelation of the kernel, centred in a frame wide enough for every lag
    frame = np.zeros((2 * c + 1, 2 * c + 1))
    frame[c - h: c + h + 1, c - h: c + h + 1] = k
    a = ndimage.correlate(frame, frame, mode="constant")
    # residual autocovariance at lag t = sum over noise lags s (both signs) of C(s) A(t - s)
    mix = np.zeros((len(_LAGS), len(_LAGS)))
    for i, (ty, tx) in enumerate(_LAGS):
        for j, (sy, sx) in enumerate(_LAGS):
            for sign in ((1,) if (sy, sx) == (0, 0) else (1, -1)):
                mix[i, j] += a[c + ty - sign * sy, c + tx - sign * sx]
    return dict(zip(_LAGS, np.linalg.lstsq(mix, measured, rcond=None)[0]))


def measured_kernel(noisy: np.ndarray | list[np.ndarray], *, window: int = _WINDOW,
                    scanned: bool = False) -> np.ndarray:
    """The noise correlation kernel of a plane (a stack (..., Y, X) or a list of crops of one): from
    the spectrum's noise band (`n2sr.spectrum.band_correlation`: texture-robust, lags up to 1 and
    reading strong correlation low), or, where that reads lag-1 from `WIDEFIELD_LAG1`, from the image
    domain (`estimate_kernel` with `window`: it sees lag 2 and is within 0.03 of the truth at 0.6).
    `scanned`: a point-scanning microscope's noise, correlated along the scan lines (x) only
    (`n2sr.spectrum.SCAN_LAGS`); the image-domain kernel then keeps its lags along x alone."""
    pieces = noisy if isinstance(noisy, list) else [noisy]
    kernel = band_correlation(pieces, SCAN_LAGS if scanned else LAGS)
    if not Autocorrelation.from_kernel(kernel).widefield:
        return kernel
    kernel = np.mean([estimate_kernel(z, window=window) for z in pieces], axis=0)
    if scanned:
        kernel[[0, 1, 3, 4], :] = 0.0
    return kernel


def choose_stride(corr: Autocorrelation) -> int:
    """The sub-sampler stride for a measured noise autocorrelation (`n2sr.nn.decorrelate`).

    Stride ``s`` puts a cell's target pixels ``s - 1`` pixels from its input pixel: 2 (the paper's
    2x2 cells) while neighbours are nearly independent (lag-1 correlation < `WIDEFIELD_LAG1`),
    else 3, or 4 when pixels two apart still correlate (lag 2 >= `LAG2_THRESHOLD`). A wider
    stride costs resolution (`n2sr.nn.decorrelate`), so it is taken only where the noise needs it.
    """
    if not corr.widefield:
        return 2
    return 4 if corr.lag2 >= LAG2_THRESHOLD else 3
