"""Denoising with a trained network: one plane, an N-D array, or a Zarr stack out of core.

A Noise2SR network maps a plane to its 2x super-resolution (``scale=2``); the denoised plane is
that SR output brought back to the input grid. The baselines' plain U-Net (``scale=1``) outputs
the denoised plane itself. Large planes go through as overlapping tiles blended in the output
space (`n2sr.tiling`); Zarr stacks go through dask block by block, each block aligned to
whole output chunks, so memory is set by the block size and every chunk has exactly one writer.

With the default overlap (the receptive field) and ``downsample="avgpool"`` the result does not
depend on `tile_size` or `block_size` beyond float rounding: tiles start on the network's
pooling grid and only pixels a tile computed exactly are kept.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Literal

import dask.array as da
import numpy as np
import torch
import zarr
from tqdm import tqdm

from n2sr import tiling
from n2sr.device import Precision, autocast, pick_device, resolve_precision
from n2sr.model import MULTIPLE
from n2sr.normalize import Normalizer

Net = Callable[[torch.Tensor], torch.Tensor]
"""``Tensor (N, 1, h, w) float32 -> Tensor (N, 1, s h, s w)``, ``s`` the scale (2 Noise2SR, 1 U-Net):
an eval-mode module or a prepared callable."""


@dataclass(frozen=True)
class DenoiseConfig:
    """Inference settings; names equal the workflow config keys and CLI options.

    tile_size : side of the plane region one forward pass is responsible for (a multiple of
        32); planes up to this size go through whole. A pass sees ``tile_size + 2 * halo``.
    overlap : context each tile and block gets beyond its region, rounded up to 32. None:
        the network's receptive field, which makes tiled output equal whole-plane output.
    downsample : how the 2x output returns to the input grid. ``avgpool`` (2x2 mean) is exact
        and shift-invariant; ``bilinear`` is the authors' ``F.interpolate(scale_factor=0.5,
        mode="bilinear", align_corners=True)``, evaluated on whole-plane coordinates.
    block_size : side of the region `denoise_zarr` holds in memory, rounded to whole chunks.
    """

    tile_size: int = 1024
    overlap: int | None = None
    downsample: Literal["avgpool", "bilinear"] = "avgpool"
    block_size: int = 2048
    device: str = "auto"
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        if self.tile_size < MULTIPLE or self.tile_size % MULTIPLE:
            raise ValueError(f"tile_size must be a positive multiple of {MULTIPLE}, got {self.tile_size}; "
                             f"use {tiling.round_up(max(self.tile_size, 1), MULTIPLE)}")
        if self.overlap is not None and self.overlap < 0:
            raise ValueError(f"overlap must be >= 0 (or unset for the receptive field), got {self.overlap}")
        if self.downsample not in ("avgpool", "bilinear"):
            raise ValueError(f"downsample must be 'avgpool' or 'bilinear', not {self.downsample!r}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")

    def halo(self, receptive_field: int) -> int:
        """Context in input pixels around each tile and block: `overlap` or the receptive field, rounded up to 32."""
        return tiling.round_up(receptive_field if self.overlap is None else self.overlap, MULTIPLE)


def denoise_plane(net: Net, plane: np.ndarray, normalizer: Normalizer, cfg: DenoiseConfig, *,
                  receptive_field: int, return_sr: bool = False, scale: int = 2) -> tuple[np.ndarray, np.ndarray | None]:
    """Denoise one plane.

    Parameters
    ----------
    net : eval-mode network or callable, ``(N, 1, h, w) float32 -> (N, 1, scale h, scale w)``.
    plane : ndarray (Y, X), any real dtype, raw intensities.
    normalizer : the training normalisation; applied before and undone after the network.
    receptive_field : radius of the network's receptive field in input pixels
        (`n2sr.model.receptive_field`); sets the default halo and where tiles are exact.
    return_sr : also return the 2x super-resolved plane (``scale=2`` only).
    scale : 2 for a Noise2SR network, 1 for a same-size U-Net.

    Returns
    -------
    denoised : ndarray (Y, X) float32, raw intensity units.
    sr : ndarray (2Y, 2X) float32, raw intensity units, or None unless `return_sr`.
    """
    plane = np.asarray(plane)
    if plane.ndim != 2:
        raise ValueError(f"expected a plane of shape (Y, X), got shape {plane.shape}")
    return _Runner.of(net, cfg, receptive_field, scale).denoise(plane, normalizer, return_sr)


def denoise_array(net: Net, arr: np.ndarray, normalizer: Normalizer, cfg: DenoiseConfig, *,
                  receptive_field: int, return_sr: bool = False, scale: int = 2,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Denoise every plane of ``ndarray (..., Y, X)`` (e.g. ``T C Z Y X``) independently.

    Returns ``(denoised (..., Y, X) float32, sr (..., 2Y, 2X) float32 or None)``, both in raw
    intensity units; see `denoise_plane` for the arguments.
    """
    arr = np.asarray(arr)
    if arr.ndim < 2:
        raise ValueError(f"expected an array of shape (..., Y, X), got shape {arr.shape}")
    *lead, ny, nx = arr.shape
    denoised = np.empty(arr.shape, np.float32)
    sr = np.empty((*lead, 2 * ny, 2 * nx), np.float32) if return_sr else None
    run = _Runner.of(net, cfg, receptive_field, scale)
    if return_sr:
        run.check_sr()
    for index in tqdm(np.ndindex(*lead), total=math.prod(lead), desc="denoise", unit="plane", disable=not progress):
        d, s = run.denoise(arr[index], normalizer, return_sr)
        denoised[index] = d
        if sr is not None:
            sr[index] = s
    return denoised, sr


def denoise_zarr(net: Net, src: zarr.Array | da.Array, dst: zarr.Array, normalizer: Normalizer, cfg: DenoiseConfig, *,
                 receptive_field: int, sr_dst: zarr.Array | None = None, scale: int = 2, progress: bool = True,
                 scheduler: str = "synchronous") -> None:
    """Denoise a Zarr stack ``(..., Y, X)`` (e.g. ``t c z y x``) into `dst`, out of core, with dask.

    The output is a dask array whose blocks are whole `dst` chunks (shards if sharded) and, at
    2x, whole `sr_dst` chunks, about `cfg.block_size` a side. Each block reads its own window
    (the block plus `cfg.halo`, rounded out to the pooling grid) from `src`, is denoised like a
    plane, and is stored with ``da.store(lock=False)``: safe because every chunk has exactly one
    writer, which is checked before anything is written (misaligned lock-free writes lose
    data silently). Peak memory follows the block size, not the stack size.

    Parameters
    ----------
    src : zarr.Array (..., Y, X), any real dtype; or any array read by slicing into numpy,
        e.g. a dask selection of captures (only block windows are read).
    dst : zarr.Array (..., Y, X), floating dtype, created by the caller; receives raw intensities.
    sr_dst : zarr.Array (..., 2Y, 2X), floating dtype, optional; receives the 2x output (``scale=2``).
    scale : 2 for a Noise2SR network, 1 for a same-size U-Net.
    scheduler : dask scheduler. The default runs one block at a time, as the network already
        uses all cores and memory stays at one block.
    """
    _check_target(dst, src.shape, "dst")
    *lead, ny, nx = src.shape
    run = _Runner.of(net, cfg, receptive_field, scale)
    if sr_dst is not None:
        run.check_sr()
        _check_target(sr_dst, (*lead, 2 * ny, 2 * nx), "sr_dst")
    sides = [_block_side(1, axis, 1, dst, sr_dst) for axis in range(len(lead))]
    sides += [_block_side(cfg.block_size, axis, 2, dst, sr_dst) for axis in (-2, -1)]
    chunks = tuple(_split(n, side) for n, side in zip(src.shape, sides))
    with tqdm(total=math.prod(map(len, chunks)), desc="denoise", unit="block", disable=not progress) as bar:
        block = _Block(run, src, normalizer, sr_dst is not None, bar)
        # An explicit name: dask would otherwise hash (pickle) the network and the source.
        packed = da.map_blocks(block, chunks=(*chunks, (block.channels,)), dtype=np.float32,
                               meta=np.empty((0,) * (src.ndim + 1), np.float32),
                               name=f"n2sr-denoise-{uuid.uuid4().hex}")
        sources, targets = [packed[..., 0]], [dst]
        if sr_dst is not None:
            sr_chunks = (*chunks[:-2], *(tuple(2 * c for c in cs) for cs in chunks[-2:]))
            sources.append(packed.map_blocks(_unpack_sr, drop_axis=src.ndim, chunks=sr_chunks, dtype=np.float32))
            targets.append(sr_dst)
        for blocks, target, name in zip(sources, targets, ("dst", "sr_dst")):
            _check_aligned(blocks, target, name)
        da.store(sources, targets, lock=False, scheduler=scheduler)


@dataclass(frozen=True)
class _Block:
    """Computes one output block of `denoise_zarr` from its own window of `src`.

    Returns ``ndarray (..., h, w, channels) float32``: channel 0 is the denoised block; with
    SR, channels 1-4 are the 2x pixels ``(2i + a, 2j + b)`` in order ``(a, b) = 00, 01, 10, 11``,
    so both outputs come from one pass and share the block grid (see `_unpack_sr`).
    """

    run: _Runner
    src: Any
    normalizer: Normalizer
    with_sr: bool
    bar: tqdm

    @property
    def channels(self) -> int:
        return 5 if self.with_sr else 1

    def __call__(self, block_info: dict) -> np.ndarray:
        *lead, (y0, y1), (x0, x1) = block_info[None]["array-location"][:-1]
        *_, ny, nx = self.src.shape
        halo = self.run.cfg.halo(self.run.receptive_field)
        (wy0, wy1), (wx0, wx1) = _window(y0, y1, ny, halo), _window(x0, x1, nx, halo)
        h, w = y1 - y0, x1 - x0
        out = np.empty((*(b - a for a, b in lead), h, w, self.channels), np.float32)
        for index in np.ndindex(*out.shape[:-3]):
            plane = (*(a + i for (a, _), i in zip(lead, index)), slice(wy0, wy1), slice(wx0, wx1))
            sr = self.run.predict(self.normalizer.forward(np.asarray(self.src[plane])))
            denoised = self.run.to_input_grid(sr, (wy0, wx0), (y0, x0, y1, x1), (ny, nx))
            out[index][..., 0] = self.normalizer.inverse(denoised)
            if self.with_sr:
                crop = self.normalizer.inverse(sr[2 * (y0 - wy0):2 * (y1 - wy0), 2 * (x0 - wx0):2 * (x1 - wx0)])
                out[index][..., 1:] = crop.reshape(h, 2, w, 2).transpose(0, 2, 1, 3).reshape(h, w, 4)
        self.bar.update()
        return out


def _unpack_sr(packed: np.ndarray) -> np.ndarray:
    """``(..., h, w, 5)`` block of `_Block` -> its 2x output ``(..., 2h, 2w)``."""
    *lead, h, w, _ = packed.shape
    sr = packed[..., 1:].reshape(*lead, h, w, 2, 2)
    return np.moveaxis(sr, -2, -3).reshape(*lead, 2 * h, 2 * w)


@dataclass(frozen=True)
class _Runner:
    """A network with its device, precision and tiling, resolved once per call."""

    net: Net
    cfg: DenoiseConfig
    receptive_field: int
    scale: int
    device: torch.device
    precision: Literal["bf16", "fp32"]

    @classmethod
    def of(cls, net: Net, cfg: DenoiseConfig, receptive_field: int, scale: int) -> "_Runner":
        if scale not in (1, 2):
            raise ValueError(f"scale must be 1 (same-size U-Net) or 2 (Noise2SR), got {scale}")
        device = pick_device(cfg.device)
        return cls(net, cfg, receptive_field, scale, device, resolve_precision(cfg.precision, device))

    def check_sr(self) -> None:
        if self.scale != 2:
            raise ValueError("this network has no 2x super-resolved output (a baseline's same-size U-Net); "
                             "do not ask for one (--sr, write_sr)")

    def denoise(self, plane: np.ndarray, normalizer: Normalizer,
                return_sr: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """`denoise_plane` once device and precision are known."""
        if return_sr:
            self.check_sr()
        sr = self.predict(normalizer.forward(plane))
        denoised = self.to_input_grid(sr, (0, 0), (0, 0, *plane.shape), plane.shape)
        return normalizer.inverse(denoised), normalizer.inverse(sr) if return_sr else None

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
        tiles = tiling.tiles(x.shape, self.cfg.tile_size, self.cfg.halo(self.receptive_field), MULTIPLE,
                             self.receptive_field)
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
        if isinstance(self.net, torch.nn.Module) and self.net.training:
            raise ValueError("the network is in training mode; call .eval() before denoising")
        inp = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None].to(self.device)
        with torch.inference_mode(), autocast(self.device, self.precision):
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


def _window(start: int, stop: int, size: int, halo: int) -> tuple[int, int]:
    """``[start, stop)`` widened by `halo` and rounded out to the pooling grid, within ``[0, size)``."""
    return max(0, (start - halo) // MULTIPLE * MULTIPLE), min(size, tiling.round_up(stop + halo, MULTIPLE))


def _block_side(block_size: int, axis: int, scale: int, dst: zarr.Array, sr_dst: zarr.Array | None) -> int:
    """Block side along `axis`: a multiple of the `dst` chunk (shard if sharded) whose `scale`
    multiple (2 on y and x, 1 on the other axes) is a multiple of the `sr_dst` one, as close
    to `block_size` as that allows."""
    unit = (dst.shards or dst.chunks)[axis]
    if sr_dst is not None:
        sr_unit = (sr_dst.shards or sr_dst.chunks)[axis]
        unit = math.lcm(unit, sr_unit // math.gcd(sr_unit, scale))
    return max(unit, block_size // unit * unit)


def _split(size: int, side: int) -> tuple[int, ...]:
    """Dask chunks of an axis of `size` cut every `side`: ``(side, ..., side, rest)``."""
    return tuple(min(side, size - start) for start in range(0, size, side))


def _check_aligned(blocks: da.Array, target: zarr.Array, name: str) -> None:
    """Refuse a lock-free store unless every block edge is a `target` chunk (shard) edge or its end.

    Two blocks sharing a chunk would each read-modify-write it, and one would lose its pixels.
    """
    for axis, (sizes, unit, size) in enumerate(zip(blocks.chunks, target.shards or target.chunks, target.shape)):
        edges = np.cumsum(sizes)
        if any(edge % unit and edge != size for edge in edges):
            raise ValueError(f"{name}: blocks {sizes} along axis {axis} do not cover whole chunks of {unit}; "
                             "lock-free writes would lose data")


def _check_target(arr: zarr.Array, shape: tuple[int, ...], name: str) -> None:
    """Outputs are created by the caller; refuse ones that would truncate or not fit."""
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    if arr.dtype.kind != "f":
        raise ValueError(f"{name} has dtype {arr.dtype}; create it with a floating dtype such as float32")
