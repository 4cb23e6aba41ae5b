"""Noise whitening around the unchanged 2x2 sub-sampler, for spatially correlated noise.

Noise2SR's loss is the supervised one plus a constant only where the input pixel tells nothing
about its targets' noise (the paper's Theorem 1). Correlated noise (widefield cameras, and a
little in FMD's confocal captures) breaks that: the network learns to keep part of the noise.
The wider stride (`n2sr.nn.decorrelate`) moves the targets away from the input pixel and pays
with resolution. Whitening keeps the resolution: the plane is filtered by
``sqrt(S(0) / S(w))``, where ``S`` is the spectrum of the noise's measured correlation kernel
(`n2sr.correlation.measured_kernel`), so its noise is white; Noise2SR trains and denoises there,
and the output is filtered back by ``sqrt(S(w) / S(0))``. Both filters pass a constant unchanged,
so intensities and the normaliser keep their meaning. Measured (`benchmarks/results/
noise_correlation.md`, section 3): at lag-1 correlation 0.3 whitening gains 2.82 dB over the plain
sub-sampler where stride 3 gains 2.35; at 0.6 stride 3 does better (the filter floors). On FMD's
weakly correlated confocal captures it gained at 2 CPU-minutes and lost at 10, so `whiten: auto`
(`n2sr.nn.decorrelate.resolve_stride`) whitens only widefield-like noise.

The filters are FIR, truncated where their energy outside is under `TRUNCATION`, and applied by
FFT convolution of the edge-reflected plane: the same filter in training and at inference, and
a finite reach, so a streamed block needs only ``radius`` pixels of context per filter.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from n2sr.nn.inference import Engine, Window, as_dtype
from n2sr.spectrum import kernel_spectrum
from n2sr.nn.planewise import PlaneWise

FLOOR = 0.005  # the spectrum is floored at this fraction of its peak: a gain of at most 1/sqrt(FLOOR)
GRID = 256  # the filters are designed on this FFT grid (their reach is far smaller)
TRUNCATION = 1e-6  # energy a truncated filter may leave out
MAX_RADIUS = 24


def as_kernel(value: object) -> np.ndarray:
    """A recorded correlation kernel as an array, refused unless odd, square and 1 at the centre."""
    k = np.asarray(value, np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0 or k[k.shape[0] // 2, k.shape[0] // 2] != 1.0:
        raise ValueError(f"whitening kernel must be an odd square array with 1 at its centre, got shape {k.shape}")
    return k


def _crop(full: np.ndarray) -> np.ndarray:
    """The centred FIR of an ``(GRID, GRID)`` impulse response, cut where it is negligible, sum 1."""
    h = np.fft.fftshift(full)
    c = GRID // 2
    total = float(np.sum(h**2))
    radius = MAX_RADIUS
    for r in range(1, MAX_RADIUS + 1):
        if total - float(np.sum(h[c - r:c + r + 1, c - r:c + r + 1] ** 2)) <= TRUNCATION * total:
            radius = r
            break
    fir = h[c - radius:c + radius + 1, c - radius:c + radius + 1]
    return fir / fir.sum()


def _spectrum(kernel: np.ndarray) -> np.ndarray:
    """The noise spectrum ``S`` of a correlation kernel (odd square, 1 at the centre) on the design grid."""
    w = np.fft.fftfreq(GRID) * 2.0 * np.pi
    return kernel_spectrum(kernel, w[:, None], w[None, :])


def complete(kernel: np.ndarray) -> bool:
    """Whether whitening makes this noise white: not where its spectrum falls under `FLOOR` of its
    peak (strong correlation, lag-1 ~0.6), whose whitened noise keeps a correlation (0.07 there):
    the wider stride then does better (37.84 against 37.65 dB at 0.6; `noise_correlation.md`)."""
    spectrum = _spectrum(kernel)
    return bool(spectrum.min() >= FLOOR * spectrum.max())


def filters(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(whitening, recolouring) FIR filters for noise of correlation `kernel` (odd square, 1 at
    the centre, as `n2sr.correlation.measured_kernel` gives)."""
    spectrum = _spectrum(kernel)
    spectrum = np.maximum(spectrum, FLOOR * spectrum.max())
    ratio = spectrum / spectrum[0, 0]
    return (_crop(np.real(np.fft.ifft2(1.0 / np.sqrt(ratio)))),
            _crop(np.real(np.fft.ifft2(np.sqrt(ratio)))))


def apply(planes: np.ndarray, fir: np.ndarray) -> np.ndarray:
    """`fir` over the last two axes of `planes` (edges reflected), float64, same shape."""
    # Imported here: scipy.signal costs about 1 s per process, and every train and denoise job
    # imports this module, while only correlated noise is ever whitened.
    from scipy import signal

    planes = np.asarray(planes, np.float64)
    r = fir.shape[0] // 2
    pad = [(0, 0)] * (planes.ndim - 2) + [(r, r), (r, r)]
    mode = "reflect" if min(planes.shape[-2:]) > r else "symmetric"
    padded = np.pad(planes, pad, mode=mode)
    return signal.fftconvolve(padded, fir.reshape((1,) * (planes.ndim - 2) + fir.shape), mode="valid", axes=(-2, -1))


def whiten_planes(planes: Sequence[np.ndarray], kernel: np.ndarray) -> list[np.ndarray]:
    """The training planes, whitened (float32, as the trainer takes them)."""
    fir = filters(kernel)[0]
    return [apply(p, fir).astype(np.float32) for p in planes]


class Whitened(PlaneWise):
    """An `Engine` applied between the whitening and the recolouring filter (module docstring).

    Offers the engine's `denoise_window` and (`PlaneWise`) `denoise_array`, without the 2x
    output (it is in the whitened domain). ``context``: the engine's overlap plus both filters' reach.
    """

    def __init__(self, engine: Engine, kernel: np.ndarray) -> None:
        self.engine = engine
        self.analysis, self.synthesis = filters(kernel)
        self.context = engine.overlap + self.analysis.shape[0] // 2 + self.synthesis.shape[0] // 2

    def denoise_window(self, planes: np.ndarray, window: Window, return_sr: bool = False,
                       dtype: np.dtype | None = None) -> tuple[np.ndarray, None]:
        if return_sr:
            raise ValueError("a whitened model has no 2x super-resolved output (it denoises the whitened plane)")
        origin, (y0, x0, y1, x1), _ = window
        planes = np.asarray(planes)
        white = apply(planes, self.analysis).astype(np.float32)
        shape = planes.shape[-2:]
        denoised, _ = self.engine.denoise_window(white, ((0, 0), (0, 0, *shape), shape), False)
        full = apply(denoised, self.synthesis)
        out = full[:, y0 - origin[0]:y1 - origin[0], x0 - origin[1]:x1 - origin[1]].astype(np.float32)
        return (out if dtype is None else as_dtype(out, dtype)), None
