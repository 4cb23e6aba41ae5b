"""Noise level and neighbour correlation from the high-frequency band of a plane's periodogram.

Why a band: a microscope's optics pass no signal beyond their cut-off, and fluorescence images
are sampled at or above Nyquist, so the outer band of the spectrum holds noise alone. Measured
against the references in ../shared/data (`benchmarks/results/reference_free.md`): W2S's signal
has under 1 % of the noise's power beyond 0.4 x Nyquist, FMD confocal's 3-8 % beyond 0.6. The
residual estimates in the image domain (`n2sr.noise.estimate_poisson_gaussian`,
`n2sr.correlation.estimate_kernel`) see texture as noise wherever the image has any; here the
texture sits in frequencies that are not used.

For noise of mean variance ``v`` and correlation ``rho(d)`` (lags ``d``), spatially varying or
not, the expected periodogram is ``v S(w)``, ``S(w) = sum_d rho(d) cos(w . d)``. So:

* `band_correlation`: ``rho`` at lags (0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0), the weighted
  least-squares fit of ``c0 + sum_d 2 c_d cos(w . d)`` to the periodogram over `SHAPE_BAND`.
  On FMD BPAE nuclei (18 FOVs, truth from pairs of consecutive captures: 0.05 along x, 0 along
  y) it reads 0.08 and 0.02 where the image-domain estimate reads 0.16 and 0.11. It reads
  stronger correlation low (0.35 for 0.4 on a smooth image, whose image-domain estimate is exact).
* `band_energy`: ``v`` = the periodogram's sum over `ENERGY_BAND` over that of ``S``: on W2S
  within 0.6 % of the truth (the image-domain fit: up to 5 %).
* A point-scanning microscope's noise correlates along its scan lines only (`SCAN_LAGS`): fitted
  with that constraint, and its level read from the same band (`SHAPE_BAND`), the texture of
  single FMD confocal frames inflates the energy far less (`n2sr.estimate.fit`, ``scanned``).

Strongly correlated noise (widefield-like) has terms this model leaves out (lags (1, 2), (2, 2)):
`n2sr.correlation.measured_kernel` uses the image-domain kernel there.

Periodograms are of Moisan's periodic component (2011, "Periodic plus smooth image
decomposition", J Math Imaging Vis 39), which removes the cross that the jump between opposite
edges would put along both frequency axes, without a window that would weight the centre's
noise over the border's.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

ENERGY_BAND = 0.5  # Chebyshev frequency radius, in units of Nyquist, from which the level is read
SHAPE_BAND = 0.6  # ... and the correlation (its cosines need a wide band; texture reaches ~0.6 on FMD)
LAGS = ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0))
# A point-scanning microscope (confocal, multiphoton) reads a line's pixels microseconds apart
# through the detector's bandwidth and its lines milliseconds apart: its noise correlates along the
# scan line (x) only. On FMD's confocal captures the truth (pairs of captures, noisy minus avg50)
# is 0.05-0.17 along x and 0-0.07 along y, while the band fit over `LAGS` reads texture as 0.16-0.17
# along y on BPAE_G/R. Fitted over these lags, the band explains any y dependence as texture.
SCAN_LAGS = ((0, 1), (0, 2))
# Correlations below this are read as 0: on white noise (W2S, synthetic) a 256 x 256 crop's fit
# scatters by about +-0.03, and each spurious 0.03 moved the energy by ~1.5 %.
NEGLIGIBLE = 0.05
MIN_SIDE = 16  # a piece's periodogram needs a few frequencies in the band along each axis
TILE = 512  # periodograms are of tiles of at most this side (memory; the fit pools them)


def periodic_component(z: np.ndarray) -> np.ndarray:
    """Moisan's periodic component of a plane: the plane minus the smooth image whose Laplacian
    is the jump across its opposite edges."""
    z = np.asarray(z, np.float64)
    m, n = z.shape
    v = np.zeros_like(z)
    v[0, :] += z[-1, :] - z[0, :]
    v[-1, :] += z[0, :] - z[-1, :]
    v[:, 0] += z[:, -1] - z[:, 0]
    v[:, -1] += z[:, 0] - z[:, -1]
    q, r = np.arange(m)[:, None], np.arange(n)[None, :]
    denominator = 2.0 * np.cos(2.0 * np.pi * q / m) + 2.0 * np.cos(2.0 * np.pi * r / n) - 4.0
    denominator[0, 0] = 1.0
    smooth = np.fft.fft2(v) / denominator
    smooth[0, 0] = 0.0
    return z - np.real(np.fft.ifft2(smooth))


def _band(z: np.ndarray, band: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Periodogram ordinates of `z`'s periodic component at Chebyshev radius >= `band` (x Nyquist),
    with their angular frequencies (wy, wx)."""
    p = periodic_component(z)
    power = np.abs(np.fft.fft2(p - p.mean())) ** 2 / p.size
    fy, fx = np.meshgrid(np.fft.fftfreq(p.shape[0]) * 2.0, np.fft.fftfreq(p.shape[1]) * 2.0, indexing="ij")
    keep = np.maximum(np.abs(fy), np.abs(fx)) >= band
    return power[keep], np.pi * fy[keep], np.pi * fx[keep]


def _tiles(planes: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
    """The planes cut into tiles of at most `TILE` per side (those of at least `MIN_SIDE`), so that
    a periodogram's arrays stay the size of a tile whatever the plane."""
    for z in planes:
        if min(z.shape) < MIN_SIDE:
            continue
        for rows in np.array_split(np.arange(z.shape[0]), -(-z.shape[0] // TILE)):
            for cols in np.array_split(np.arange(z.shape[1]), -(-z.shape[1] // TILE)):
                yield z[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _planes(noisy: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """A plane, a stack (..., Y, X) or a list of planes or stacks, as a list of 2-D planes."""
    pieces = [noisy] if isinstance(noisy, np.ndarray) else noisy
    return [plane for z in pieces for plane in np.asarray(z).reshape(-1, *np.shape(z)[-2:])]


def _design(wy: np.ndarray, wx: np.ndarray, lags: Sequence[tuple[int, int]]) -> np.ndarray:
    return np.stack([np.ones_like(wy)] + [2.0 * np.cos(dy * wy + dx * wx) for dy, dx in lags], axis=1)


def band_correlation(noisy: np.ndarray | Sequence[np.ndarray],
                     lags: Sequence[tuple[int, int]] = LAGS) -> np.ndarray:
    """The noise's 5 x 5 correlation kernel (entry ``(2 + dy, 2 + dx)`` at lag ``(dy, dx)``, 1 at
    the centre, zero beyond `lags`: `LAGS`, or `SCAN_LAGS` for a point-scanning microscope) fitted
    to the band of `noisy` (a plane, a stack of planes or a list of crops of one; the normal
    equations of all their tiles pooled). Weighted by the inverse square of the fit (a periodogram
    ordinate's standard deviation is its mean): three passes, the first unweighted."""
    planes = _planes(noisy)
    coef = None
    for _ in range(3):
        gram, rhs, tiles = np.zeros((len(lags) + 1,) * 2), np.zeros(len(lags) + 1), 0
        for tile in _tiles(planes):
            power, wy, wx = _band(tile, SHAPE_BAND)
            design = _design(wy, wx, lags)
            weight = (np.ones_like(power) if coef is None
                      else 1.0 / np.maximum(design @ coef, 1e-3 * max(coef[0], 1e-12)))
            weighted = design * weight[:, None]
            gram += weighted.T @ weighted
            rhs += weighted.T @ (power * weight)
            tiles += 1
        if not tiles:
            raise ValueError(f"no plane or crop of at least {MIN_SIDE} x {MIN_SIDE} pixels to read a spectrum from")
        coef = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    kernel = np.zeros((5, 5))
    kernel[2, 2] = 1.0
    if coef[0] > 0:
        for (dy, dx), c in zip(lags, coef[1:]):
            if abs(c / coef[0]) >= NEGLIGIBLE:
                kernel[2 + dy, 2 + dx] = kernel[2 - dy, 2 - dx] = c / coef[0]
    return kernel


def kernel_spectrum(kernel: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """``S(w) = sum_d rho(d) cos(w . d)`` of a correlation kernel (odd square, entry ``(half + dy,
    half + dx)`` at lag ``(dy, dx)``) at the angular frequencies (wy, wx), broadcast together."""
    k = np.asarray(kernel, np.float64)
    half = k.shape[0] // 2
    out = np.zeros(np.broadcast_shapes(np.shape(wy), np.shape(wx)))
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            if k[half + dy, half + dx]:
                out += k[half + dy, half + dx] * np.cos(dy * wy + dx * wx)
    return out


def band_energy(noisy: np.ndarray | Sequence[np.ndarray], kernel: np.ndarray, band: float = ENERGY_BAND) -> float:
    """The mean noise variance of `noisy`, for noise of correlation `kernel` (5 x 5, as
    `band_correlation`): the power over the kernel's spectrum, both summed beyond `band`."""
    k = np.asarray(kernel, np.float64)
    power_sum = shape_sum = 0.0
    tiles = 0
    for tile in _tiles(_planes(noisy)):
        power, wy, wx = _band(tile, band)
        shape = kernel_spectrum(k, wy, wx)
        power_sum += float(power.sum())
        shape_sum += float(shape.sum())
        tiles += 1
    if not tiles:
        raise ValueError(f"no plane or crop of at least {MIN_SIDE} x {MIN_SIDE} pixels to read a spectrum from")
    return power_sum / max(shape_sum, 1e-12)
