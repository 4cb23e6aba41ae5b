"""Wider sub-sampler for spatially correlated noise: pixel-shuffle (PD) downsampling around the 2x2 one.

The 2x2 sub-sampler (`n2sr.nn.subsample`) takes one input pixel per 2x2 cell and trains on the
three others, next to it. When neighbouring pixels' noise correlates (widefield cameras: ~0.6),
the input pixel predicts part of its targets' noise and the network learns to keep it.

``train.stride: s`` (3 or 4) spreads each cell over an ``s x s`` box: its four pixels are the
box's corners, ``f = s - 1`` pixels apart, so the input pixel is ``f`` pixels from its targets,
where the correlation has decayed. This is AP-BSN's pixel-shuffle downsampling (Lee et al.,
CVPR 2022) by ``f`` followed by the unchanged 2x2 sub-sampler:

* training: crops of ``f * patch_size`` are split into their ``f**2`` PD sub-images (pixels
  ``f`` apart) and one random sub-image per crop is the ``patch_size`` patch the 2x2 objective
  sees, so an iteration costs what a stride-2 one does;
* inference (`Decorrelated`): the plane is split into its ``f**2`` PD sub-images, each goes through
  the unchanged engine (2x network, back to its grid), and the results are interleaved back
  (inverse PD). The network so sees, at inference as in training, pixels ``f`` apart: noise as
  decorrelated as it was trained on, never the plane's correlated neighbours.

``s = 2`` (``f = 1``) is the paper's sub-sampler, untouched. The price of ``f > 1`` is signal
resolution: each sub-image is the plane sampled every ``f`` pixels, so fine structure aliases;
no 2x super-resolved output exists on the input grid (`Decorrelated` refuses ``return_sr``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from n2sr.correlation import STRIDES, Autocorrelation, choose_stride, measured_kernel
from n2sr.nn.inference import Engine, Window, as_dtype
from n2sr.nn.planewise import PlaneWise
from n2sr.nn.whiten import Whitened, as_kernel, complete

AUTO_PLANES = 16  # planes whose noise `resolve_stride` estimates: the median of a few is stable


def factor(stride: int) -> int:
    """PD factor of a sub-sampler stride: the distance between a cell's input and target pixels."""
    if stride not in STRIDES:
        raise ValueError(f"stride must be one of {STRIDES}, got {stride!r}")
    return stride - 1


def resolve_stride(stride: int | str, planes: Sequence[np.ndarray], whiten: bool | str = False
                   ) -> tuple[int, Autocorrelation | None, np.ndarray | None]:
    """The stride, the measured correlation and the kernel to whiten by (`n2sr.nn.whiten`; None: not whitened).

    The noise is measured (`measured_kernel`, median over up to `AUTO_PLANES` evenly spread planes)
    where a choice needs it. ``whiten: "auto"`` whitens at stride 2 where the measured noise is
    widefield-like (`Autocorrelation.widefield`: lag-1 from 0.22; FMD's confocal captures read
    0.06-0.19, and whitening them gained at 2 CPU-minutes but lost at 10:
    `noise_correlation.md`); True always (stride 2 only). With
    both ``auto``, noise too strongly correlated for whitening to finish
    (`n2sr.nn.whiten.complete`) gets the wider stride instead. ``stride: "auto"`` otherwise is
    `choose_stride`'s pick; an integer stride is checked and kept.
    """
    if stride != "auto":
        factor(int(stride))
    if whiten is True and stride not in ("auto", 2):
        raise ValueError(f"whitening runs at stride 2 (it makes the noise white), not with stride {stride}")
    if stride != "auto" and (whiten is False or int(stride) != 2):
        return int(stride), None, None
    sample = planes[:: max(1, len(planes) // AUTO_PLANES)][:AUTO_PLANES]
    kernels = [measured_kernel(np.asarray(p).reshape(-1, *p.shape[-2:])[0]) for p in sample]
    corr = Autocorrelation(*np.median(np.array([Autocorrelation.from_kernel(k) for k in kernels]), axis=0).tolist())
    kernel = np.median(np.array(kernels), axis=0)
    white = whiten is True or (whiten == "auto" and corr.widefield and (stride == 2 or complete(kernel)))
    if white:
        return 2, corr, kernel
    return (choose_stride(corr) if stride == "auto" else 2), corr, None


def random_phase(batch: torch.Tensor, f: int, gen: torch.Generator) -> torch.Tensor:
    """``(N, C, f P, f P)`` -> one random PD sub-image per sample and channel, ``(N, C, P, P)``.

    Sub-image ``(i, j)`` holds the pixels ``(f y + i, f x + j)``: one pixel of every ``f x f`` cell.
    """
    if f == 1:
        return batch
    n, c, h, w = batch.shape
    phases = F.pixel_unshuffle(batch, f).view(n, c, f * f, h // f, w // f)
    pick = torch.randint(0, f * f, (n, c, 1, 1, 1), generator=gen, device=batch.device)
    return torch.gather(phases, 2, pick.expand(n, c, 1, h // f, w // f)).squeeze(2)


def split(planes: np.ndarray, f: int) -> np.ndarray:
    """``(n, H, W)`` -> its PD sub-images ``(n f**2, ceil(H/f), ceil(W/f))`` (edge-padded to a multiple of f)."""
    n, h, w = planes.shape
    hp, wp = -(-h // f) * f, -(-w // f) * f
    padded = np.pad(planes, ((0, 0), (0, hp - h), (0, wp - w)), mode="edge")
    return padded.reshape(n, hp // f, f, wp // f, f).transpose(0, 2, 4, 1, 3).reshape(n * f * f, hp // f, wp // f)


def merge(subs: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of `split`: ``(n f**2, h, w)`` -> ``(n, H, W)`` with ``(H, W) = shape``."""
    m, h, w = subs.shape
    n = m // (f * f)
    full = subs.reshape(n, f, f, h, w).transpose(0, 3, 1, 4, 2).reshape(n, h * f, w * f)
    return full[:, : shape[0], : shape[1]]


class Decorrelated(PlaneWise):
    """An `Engine` applied to the PD sub-images of every plane (see the module docstring).

    Offers the engine's `denoise_window` and (`PlaneWise`) `denoise_array` without the 2x output;
    the engine itself is unchanged. ``context``: the block context the streamer must give, ``f`` times the
    engine's overlap (the network's reach, in sub-image pixels, spans ``f`` plane pixels each).
    """

    def __init__(self, engine: Engine, stride: int) -> None:
        self.engine, self.f = engine, factor(stride)
        self.context = engine.overlap * self.f

    def denoise_window(self, planes: np.ndarray, window: Window, return_sr: bool = False,
                       dtype: np.dtype | None = None) -> tuple[np.ndarray, None]:
        if return_sr:
            raise ValueError("a stride > 2 model has no 2x super-resolved output (it denoises PD sub-images)")
        origin, (y0, x0, y1, x1), _ = window
        planes = np.asarray(planes)
        subs = split(planes, self.f)
        sub_shape = subs.shape[-2:]
        denoised, _ = self.engine.denoise_window(subs, ((0, 0), (0, 0, *sub_shape), sub_shape), False)
        full = merge(denoised, self.f, planes.shape[-2:])
        out = full[:, y0 - origin[0]:y1 - origin[0], x0 - origin[1]:x1 - origin[1]]
        return (out if dtype is None else as_dtype(out, dtype)), None


def record(stride: int, corr: Autocorrelation | None, requested: Any, kernel: np.ndarray | None = None,
           whiten: Any = False) -> dict[str, Any]:
    """What a checkpoint keeps about the stride and the whitening: what was used, what was asked,
    the estimate if measured (``whiten``: the kernel whitened by, or None)."""
    return {"stride": stride, "requested": requested, "estimate": None if corr is None else corr.as_dict(),
            "whiten": None if kernel is None else np.asarray(kernel).tolist(), "whiten_requested": whiten}


def runner(engine: Engine, stride: int, whiten: Sequence[Sequence[float]] | np.ndarray | None
           ) -> Engine | Decorrelated | Whitened:
    """The engine as a checkpoint's model runs: on PD sub-images (stride > 2), between the
    whitening filters (a kernel recorded), or as it is."""
    if whiten is not None:
        return Whitened(engine, as_kernel(whiten))
    return engine if stride == 2 else Decorrelated(engine, stride)
