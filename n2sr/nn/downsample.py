"""The 2x output of a window brought back to the input grid, as if the whole plane were downsampled.

Noise2SR denoises at 2x and returns to H x W (paper Sec. 2.4); here a window's part of that
step, in torch on the device, so blocks and tiles give what one whole-plane call would.
"""

from __future__ import annotations

import numpy as np
import torch


def downsample(sr: torch.Tensor, mode: str, origin: tuple[int, int], region: tuple[int, int, int, int],
                shape: tuple[int, int]) -> torch.Tensor:
    """Bring part of a 2x output back to the input grid, as if the whole plane were downsampled.

    Parameters
    ----------
    sr : Tensor (n, 2h, 2w) float32, the 2x output of the input window starting at `origin` (y, x).
    region : ``(y0, x0, y1, x1)`` of the plane to produce, inside the window.
    shape : ``(Y, X)`` of the whole plane; bilinear sample positions depend on it.

    Returns
    -------
    Tensor (n, y1 - y0, x1 - x0) float32

    Both modes are a separable two-tap interpolation: ``avgpool`` takes the mean of pixels
    ``2i`` and ``2i + 1``; ``bilinear`` samples ``i * (2n - 1) / (n - 1)`` (align_corners=True,
    so it stretches the plane and is not shift-invariant: the positions are those of the whole
    plane, not of the window, which keeps out-of-core blocks equal to one whole-plane call).
    """
    y0, x0, y1, x1 = region
    if mode == "avgpool":  # the same two taps as strided views: no gather, same arithmetic
        return halve(sr[:, 2 * (y0 - origin[0]):2 * (y1 - origin[0]), 2 * (x0 - origin[1]):2 * (x1 - origin[1])])
    out = sr
    for axis, (start, stop, size, offset) in ((1, (y0, y1, shape[0], origin[0])), (2, (x0, x1, shape[1], origin[1]))):
        lo, frac = _taps(start, stop, size, mode)
        lo = torch.from_numpy(lo - 2 * offset).to(sr.device)
        hi = torch.clamp(lo + 1, max=out.shape[axis] - 1)
        frac = torch.from_numpy(frac).to(sr.device).reshape((-1, 1) if axis == 1 else (1, -1))
        out = (1 - frac) * out.index_select(axis, lo) + frac * out.index_select(axis, hi)
    return out


def halve(sr: torch.Tensor) -> torch.Tensor:
    """``avgpool`` of a whole 2x output ``(..., 2h, 2w)`` -> ``(..., h, w)``: the mean of each 2x2 cell.

    The two taps as strided views (no gather), ``0.5 a + 0.5 b`` rounded once per axis, so the
    exported TorchScript model (`n2sr.nn.bmz`) computes the very arithmetic of the engine.
    """
    out = torch.add(sr[..., 0::2, :].mul(0.5), sr[..., 1::2, :], alpha=0.5)
    return torch.add(out[..., 0::2].mul(0.5), out[..., 1::2], alpha=0.5)


def _taps(start: int, stop: int, size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Lower 2x index and weight of the upper one for outputs ``[start, stop)`` of an axis of `size`."""
    index = np.arange(start, stop)
    if mode == "avgpool":
        return 2 * index, np.full(index.shape, 0.5, np.float32)
    # float32 arithmetic as in PyTorch's CPU kernel, so the result matches F.interpolate.
    scale = np.float32(2 * size - 1) / np.float32(size - 1) if size > 1 else np.float32(0)
    position = scale * index.astype(np.float32)
    lo = np.minimum(position.astype(np.int64), 2 * size - 1)
    return lo, np.clip(position - lo.astype(np.float32), 0, 1)
