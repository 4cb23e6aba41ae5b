"""The inference engine: a trained network applied to planes, tiled, blended and brought back
to the input grid, all in memory. It never sees a file, Zarr or dask: `n2sr.io.blocks` streams
stacks through `Engine.denoise_window`.

A Noise2SR network maps a plane to its 2x super-resolution (``scale=2``); the denoised plane is
that SR output brought back to the input grid. The baselines' plain U-Net (``scale=1``) outputs
the denoised plane itself. Large planes go through as overlapping tiles blended in the output
space (`n2sr.nn.tiling`).

With the default overlap (the receptive field) and ``downsample="avgpool"`` the result does not
depend on the tile size or the block a plane region was computed in, beyond float rounding:
tiles start on the network's pooling grid and only pixels a tile computed exactly are kept.

The fast path, chosen by measurement on the project's 2-core AVX512-BF16 CPU
(``benchmarks/speed.py``, ``benchmarks/results/speed.md``):

- bf16 *weights* beat bf16 autocast by 2-3x: autocast re-casts every weight on every call
  and runs the ReLUs, pooling, concatenations and pixel shuffle in fp32. So inference never
  uses autocast; the precision decided by `n2sr.nn.device.resolve_precision` sets the weights.
- channels_last (NHWC) is what oneDNN's convolutions want; NCHW pays a reorder per conv.
- The last U-Net concatenation joins 96 channels with the 1-channel input; a 1-channel NCHW
  tensor makes ``torch.cat`` fall back to NCHW and the next conv reorder ~100 channels at
  full resolution, so the input is handed over with NHWC strides.
- ``torch.compile`` gains little on CPU (the time is in oneDNN's convolutions either way) and
  each new input shape costs a compilation of tens of seconds, so ``compile="auto"`` compiles
  on CUDA only.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from n2sr.config import MULTIPLE, DenoiseConfig
from n2sr.nn import tiling
from n2sr.nn.device import pick_device, resolve_precision
from n2sr.nn.model import pad_to_multiple
from n2sr.nn.normalize import Normalizer

Forward = Callable[[torch.Tensor], torch.Tensor]
"""``Tensor (N, 1, h, w) float32 -> Tensor (N, 1, s h, s w) float32``, ``s`` the scale."""
Window = tuple[tuple[int, int], tuple[int, int, int, int], tuple[int, int]]
"""``(origin (wy0, wx0), region (y0, x0, y1, x1), plane shape (Y, X))``, as in `n2sr.io.blocks`."""


def _nhwc_input(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, C, H, W) -> same values in `dtype` with NHWC strides, also when C == 1."""
    n, c, h, w = x.shape
    out = torch.empty((n, h, w, c), dtype=dtype, device=x.device).permute(0, 3, 1, 2)
    return out.copy_(x)


def prepare(model: nn.Module, device: torch.device, precision: Literal["bf16", "fp32"],
            compile: bool | str = "auto") -> Forward:
    """The model's forward at its fastest: ``f(x (N, 1, H, W)) -> float32 (N, 1, sH, sW)``.

    The caller's model is never modified (a copy is moved, cast and laid out), so it can keep
    training or be saved afterwards. ``compile``: False eager; True ``torch.compile`` with
    dynamic shapes and frozen weights; another string is the compile ``mode``; "auto"
    compiles on CUDA only (see the module docstring).
    """
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    net = copy.deepcopy(model).eval().requires_grad_(False)
    net = net.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    if compile == "auto":
        compile = device.type == "cuda"
    if compile:
        if isinstance(compile, str):
            net = torch.compile(net, dynamic=True, mode=compile)
        else:  # freezing: weights become constants, prepacked into oneDNN's blocked layouts
            net = torch.compile(net, dynamic=True, options={"freezing": True})

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        xin = _nhwc_input(pad_to_multiple(x.to(device), MULTIPLE), dtype)
        with torch.inference_mode():
            y = net(xin)
        return y[..., : y.shape[-2] * h // xin.shape[-2], : y.shape[-1] * w // xin.shape[-1]].float().contiguous()

    return forward


class Engine:
    """A trained network ready for inference: device, precision, layout and overlap decided once.

    Parameters
    ----------
    net : an eval-mode ``nn.Module`` (prepared here: `prepare`), or a ready `Forward`
        callable taking float32 tensors on the engine's device.
    cfg : DenoiseConfig
    scale : 2 for a Noise2SR network, 1 for a same-size U-Net.
    receptive_field : radius of the network's receptive field in input pixels
        (`n2sr.nn.model.receptive_field`); the default overlap and where tiles are exact.
    normalizer : the training normalisation; applied before and undone after the network.
    """

    def __init__(self, net: nn.Module | Forward, cfg: DenoiseConfig, *, scale: int, receptive_field: int,
                 normalizer: Normalizer, compile: bool | str = "auto") -> None:
        if scale not in (1, 2):
            raise ValueError(f"scale must be 1 (same-size U-Net) or 2 (Noise2SR), got {scale}")
        self.cfg, self.scale, self.receptive_field, self.normalizer = cfg, scale, receptive_field, normalizer
        self.device = pick_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.overlap = tiling.overlap_pixels(cfg.overlap, receptive_field)
        if isinstance(net, nn.Module) and net.training:
            raise ValueError("the network is in training mode; call .eval() before denoising")
        self.net = prepare(net, self.device, self.precision, compile) if isinstance(net, nn.Module) else net

    def check_sr(self) -> None:
        if self.scale != 2:
            raise ValueError("this network has no 2x super-resolved output (a baseline's same-size U-Net); "
                             "do not ask for one (--sr, write_sr)")

    def denoise_window(self, planes: np.ndarray, window: Window, return_sr: bool = True
                       ) -> tuple[np.ndarray, np.ndarray | None]:
        """Denoise `region` of planes from their `window`.

        planes : ndarray (n, wh, ww), raw intensities of the window starting at ``origin``.
        Returns ``(denoised (n, h, w) float32, sr (n, 2h, 2w) float32 or None)`` for the region
        ``(y0, x0, y1, x1)``, in raw intensity units; SR only for ``scale=2`` and `return_sr`.
        """
        origin, (y0, x0, y1, x1), shape = window
        with_sr = return_sr and self.scale == 2
        denoised = np.empty((len(planes), y1 - y0, x1 - x0), np.float32)
        sr = np.empty((len(planes), 2 * (y1 - y0), 2 * (x1 - x0)), np.float32) if with_sr else None
        for k, plane in enumerate(planes):
            out = self.predict(self.normalizer.forward(plane))
            denoised[k] = self.normalizer.inverse(self.to_input_grid(out, origin, (y0, x0, y1, x1), shape))
            if sr is not None:
                oy, ox = origin
                sr[k] = self.normalizer.inverse(out[2 * (y0 - oy):2 * (y1 - oy), 2 * (x0 - ox):2 * (x1 - ox)])
        return denoised, sr

    def denoise_plane(self, plane: np.ndarray, return_sr: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """One plane ``(Y, X)``, any real dtype -> ``(denoised (Y, X), sr (2Y, 2X) or None)``, float32."""
        plane = np.asarray(plane)
        if plane.ndim != 2:
            raise ValueError(f"expected a plane of shape (Y, X), got shape {plane.shape}")
        if return_sr:
            self.check_sr()
        denoised, sr = self.denoise_window(plane[None], ((0, 0), (0, 0, *plane.shape), plane.shape), return_sr)
        return denoised[0], None if sr is None else sr[0]

    def denoise_array(self, arr: np.ndarray, return_sr: bool = False, progress: bool = True
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """Every plane of ``ndarray (..., Y, X)`` independently: ``(denoised (..., Y, X), sr (..., 2Y, 2X) or None)``."""
        arr = np.asarray(arr)
        if arr.ndim < 2:
            raise ValueError(f"expected an array of shape (..., Y, X), got shape {arr.shape}")
        if return_sr:
            self.check_sr()
        *lead, ny, nx = arr.shape
        denoised = np.empty(arr.shape, np.float32)
        sr = np.empty((*lead, 2 * ny, 2 * nx), np.float32) if return_sr else None
        for index in tqdm(np.ndindex(*lead), total=math.prod(lead), desc="denoise", unit="plane", disable=not progress):
            d, s = self.denoise_plane(arr[index], return_sr)
            denoised[index] = d
            if sr is not None:
                sr[index] = s
        return denoised, sr

    def to_input_grid(self, out: np.ndarray, origin: tuple[int, int], region: tuple[int, int, int, int],
                      shape: tuple[int, int]) -> np.ndarray:
        """`region` of the plane from the network output `out` of the window at `origin` (see `_downsample`)."""
        if self.scale == 1:
            y0, x0, y1, x1 = region
            return out[y0 - origin[0]:y1 - origin[0], x0 - origin[1]:x1 - origin[1]]
        return _downsample(out, self.cfg.downsample, origin, region, shape)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``ndarray (h, w) float32`` normalised -> the network output ``(s h, s w) float32``, tiled when large.

        Tile outputs are blended in the output space and divided once; for Noise2SR the
        downsampling happens after, on the blended plane, so even a non-shift-invariant
        downsampling sees no tiles.
        """
        s = self.scale
        tiles = tiling.tiles(x.shape, self.cfg.tile_size, self.overlap, MULTIPLE, self.receptive_field)
        if len(tiles) == 1:
            return self.forward(x)
        acc = np.zeros((s * x.shape[0], s * x.shape[1]), np.float32)
        total = np.zeros_like(acc)
        for tile in tiles:
            weight = tile.weights(scale=s)
            acc[tile.window(s)] += weight * self.forward(x[tile.window()])
            total[tile.window(s)] += weight
        return np.divide(acc, total, out=acc)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """One forward pass: ``ndarray (h, w) float32 -> ndarray (s h, s w) float32`` on the CPU."""
        inp = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None].to(self.device)
        with torch.inference_mode():
            out = self.net(inp)
        expected = (1, 1, self.scale * x.shape[0], self.scale * x.shape[1])
        if tuple(out.shape) != expected:
            raise ValueError(f"network output has shape {tuple(out.shape)} for input {tuple(inp.shape)}; "
                             f"expected {expected}")
        return out[0, 0].float().cpu().numpy()


def _downsample(sr: np.ndarray, mode: str, origin: tuple[int, int], region: tuple[int, int, int, int],
                shape: tuple[int, int]) -> np.ndarray:
    """Bring part of a 2x output back to the input grid, as if the whole plane were downsampled.

    Parameters
    ----------
    sr : ndarray (2h, 2w) float32, the 2x output of the input window starting at `origin` (y, x).
    region : ``(y0, x0, y1, x1)`` of the plane to produce, inside the window.
    shape : ``(Y, X)`` of the whole plane; bilinear sample positions depend on it.

    Returns
    -------
    ndarray (y1 - y0, x1 - x0) float32

    Both modes are a separable two-tap interpolation: ``avgpool`` takes the mean of pixels
    ``2i`` and ``2i + 1``; ``bilinear`` samples ``i * (2n - 1) / (n - 1)`` (align_corners=True,
    so it stretches the plane and is not shift-invariant: the positions are those of the whole
    plane, not of the window, which keeps out-of-core blocks equal to one whole-plane call).
    """
    y0, x0, y1, x1 = region
    out = sr
    for axis, (start, stop, size, offset) in enumerate(((y0, y1, shape[0], origin[0]), (x0, x1, shape[1], origin[1]))):
        lo, frac = _taps(start, stop, size, mode)
        lo -= 2 * offset
        hi = np.minimum(lo + 1, out.shape[axis] - 1)
        frac = frac.reshape((-1, 1) if axis == 0 else (1, -1))
        out = (1 - frac) * np.take(out, lo, axis=axis) + frac * np.take(out, hi, axis=axis)
    return out.astype(np.float32, copy=False)


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
