"""Out-of-core streaming of a Zarr stack through a per-block function, chunk-aligned.

The output is a dask array whose blocks are whole `dst` chunks (shards if sharded) and, with a
2x output, whole `sr_dst` chunks, about `block_size` a side. Each block reads its own window
(the block plus `context`, rounded out to the `align` grid) from the source, hands the planes
to `fn`, and is stored with ``da.store(lock=False)``: safe because every chunk has exactly one
writer, which is checked before anything is written (misaligned lock-free writes lose data
silently). Peak memory follows the block size, not the stack size.

This module knows nothing of networks: `fn` is whatever computes a block (the inference
engine's `denoise_window`).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import dask.array as da
import numpy as np
import zarr
from tqdm import tqdm

Window = tuple[tuple[int, int], tuple[int, int, int, int], tuple[int, int]]
"""``(origin (wy0, wx0), region (y0, x0, y1, x1), plane shape (Y, X))`` in plane pixels."""
BlockFn = Callable[[np.ndarray, Window], tuple[np.ndarray, "np.ndarray | None"]]
"""``(planes (n, wh, ww) raw, window) -> (region (n, h, w) float32, 2x region (n, 2h, 2w) or None)``."""


def stream_blocks(src: Any, fn: BlockFn, dst: zarr.Array, sr_dst: zarr.Array | None = None, *, context: int,
                  block_size: int, align: int, progress: bool = True, scheduler: str = "synchronous") -> None:
    """Compute `dst` (and `sr_dst`) block by block from the windows of `src` that `fn` needs.

    Parameters
    ----------
    src : array ``(..., Y, X)`` read by slicing into numpy (zarr.Array, `n2sr.io.planes.Selection`).
    fn : computes one block from its window (see `BlockFn`).
    dst : zarr.Array ``(..., Y, X)``, floating dtype, created by the caller.
    sr_dst : zarr.Array ``(..., 2Y, 2X)``, floating dtype, optional.
    context : pixels of the source each block needs beyond its region on every side.
    block_size : target side of a block, rounded to whole chunks.
    align : windows start and end on this grid (the network's pooling multiple).
    scheduler : dask scheduler; the default runs one block at a time, as the computation
        already uses all cores and memory stays at one block.
    """
    check_target(dst, tuple(src.shape), "dst")
    *lead, ny, nx = src.shape
    if sr_dst is not None:
        check_target(sr_dst, (*lead, 2 * ny, 2 * nx), "sr_dst")
    sides = [_block_side(1, axis, dst, sr_dst) for axis in range(len(lead))]
    sides += [_block_side(block_size, axis, dst, sr_dst) for axis in (-2, -1)]
    chunks = tuple(_split(n, side) for n, side in zip(src.shape, sides))
    with tqdm(total=math.prod(map(len, chunks)), desc="denoise", unit="block", disable=not progress) as bar:
        block = _Block(fn, src, context, align, sr_dst is not None, bar)
        # An explicit name: dask would otherwise hash (pickle) the function and the source.
        packed = da.map_blocks(block, chunks=(*chunks, (block.channels,)), dtype=np.float32,
                               meta=np.empty((0,) * (len(src.shape) + 1), np.float32),
                               name=f"n2sr-block-{uuid.uuid4().hex}")
        sources, targets = [packed[..., 0]], [dst]
        if sr_dst is not None:
            sr_chunks = (*chunks[:-2], *(tuple(2 * c for c in cs) for cs in chunks[-2:]))
            sources.append(packed.map_blocks(_unpack_sr, drop_axis=len(src.shape), chunks=sr_chunks,
                                             dtype=np.float32))
            targets.append(sr_dst)
        for blocks, target, name in zip(sources, targets, ("dst", "sr_dst")):
            check_aligned(blocks, target, name)
        da.store(sources, targets, lock=False, scheduler=scheduler)


@dataclass(frozen=True)
class _Block:
    """Computes one output block from its own window of `src`.

    Returns ``ndarray (..., h, w, channels) float32``: channel 0 is the block; with SR,
    channels 1-4 are the 2x pixels ``(2i + a, 2j + b)`` in order ``(a, b) = 00, 01, 10, 11``,
    so both outputs come from one pass and share the block grid (see `_unpack_sr`).
    """

    fn: BlockFn
    src: Any
    context: int
    align: int
    with_sr: bool
    bar: tqdm

    @property
    def channels(self) -> int:
        return 5 if self.with_sr else 1

    def __call__(self, block_info: dict) -> np.ndarray:
        *lead, (y0, y1), (x0, x1) = block_info[None]["array-location"][:-1]
        *_, ny, nx = self.src.shape
        (wy0, wy1), (wx0, wx1) = (_window(y0, y1, ny, self.context, self.align),
                                  _window(x0, x1, nx, self.context, self.align))
        h, w = y1 - y0, x1 - x0
        out = np.empty((*(b - a for a, b in lead), h, w, self.channels), np.float32)
        index = list(np.ndindex(*out.shape[:-3]))
        planes = np.stack([np.asarray(self.src[(*(a + i for (a, _), i in zip(lead, ix)), slice(wy0, wy1),
                                                 slice(wx0, wx1))]) for ix in index])
        denoised, sr = self.fn(planes, ((wy0, wx0), (y0, x0, y1, x1), (ny, nx)))
        for k, ix in enumerate(index):
            out[ix][..., 0] = denoised[k]
            if self.with_sr:
                out[ix][..., 1:] = sr[k].reshape(h, 2, w, 2).transpose(0, 2, 1, 3).reshape(h, w, 4)
        self.bar.update()
        return out


def _unpack_sr(packed: np.ndarray) -> np.ndarray:
    """``(..., h, w, 5)`` block of `_Block` -> its 2x output ``(..., 2h, 2w)``."""
    *lead, h, w, _ = packed.shape
    sr = packed[..., 1:].reshape(*lead, h, w, 2, 2)
    return np.moveaxis(sr, -2, -3).reshape(*lead, 2 * h, 2 * w)


def _window(start: int, stop: int, size: int, context: int, align: int) -> tuple[int, int]:
    """``[start, stop)`` widened by `context` and rounded out to the `align` grid, within ``[0, size)``."""
    return max(0, (start - context) // align * align), min(size, -(-(stop + context) // align) * align)


def _block_side(block_size: int, axis: int, dst: zarr.Array, sr_dst: zarr.Array | None) -> int:
    """Block side along `axis`: a multiple of the `dst` chunk (shard if sharded) whose double (on y
    and x; the same on other axes) is a multiple of the `sr_dst` one, as close to `block_size`
    as that allows."""
    unit = (dst.shards or dst.chunks)[axis]
    if sr_dst is not None:
        scale = 2 if axis in (-2, -1) else 1
        sr_unit = (sr_dst.shards or sr_dst.chunks)[axis]
        unit = math.lcm(unit, sr_unit // math.gcd(sr_unit, scale))
    return max(unit, block_size // unit * unit)


def _split(size: int, side: int) -> tuple[int, ...]:
    """Dask chunks of an axis of `size` cut every `side`: ``(side, ..., side, rest)``."""
    return tuple(min(side, size - start) for start in range(0, size, side))


def check_aligned(blocks: da.Array, target: zarr.Array, name: str) -> None:
    """Refuse a lock-free store unless every block edge is a `target` chunk (shard) edge or its end.

    Two blocks sharing a chunk would each read-modify-write it, and one would lose its pixels.
    """
    for axis, (sizes, unit, size) in enumerate(zip(blocks.chunks, target.shards or target.chunks, target.shape)):
        edges = np.cumsum(sizes)
        if any(edge % unit and edge != size for edge in edges):
            raise ValueError(f"{name}: blocks {sizes} along axis {axis} do not cover whole chunks of {unit}; "
                             "lock-free writes would lose data")


def check_target(arr: zarr.Array, shape: tuple[int, ...], name: str) -> None:
    """Outputs are created by the caller; refuse ones that would truncate or not fit."""
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    if arr.dtype.kind != "f":
        raise ValueError(f"{name} has dtype {arr.dtype}; create it with a floating dtype such as float32")
