"""Out-of-core streaming of a Zarr stack through a per-block function, chunk-aligned and pipelined.

A block is a set of whole output chunks (shards if sharded): several planes along the leading
axes and about `block_size` a side in the plane, within a budget of ``block_size**2`` pixels
per plane-region. For each block the source window it needs (the region plus `context`, rounded
out to the `align` grid) is read, handed to `fn`, and the result written. Reading runs ahead in
one thread (up to `prefetch` blocks) and writing behind in another (up to `prefetch` blocks),
so decoding, computing and encoding overlap while peak memory stays at about
``2 * prefetch + 1`` blocks, whatever the size of the stack.

Every chunk belongs to exactly one block and is written once, by one write: block edges are
checked against the chunk (shard) grid of every target before anything is written (a partial
chunk written by two blocks would lose one of them).

This module knows nothing of networks: `fn` is whatever computes a block (the inference
engine's `denoise_window`).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

Window = tuple[tuple[int, int], tuple[int, int, int, int], tuple[int, int]]
"""``(origin (wy0, wx0), region (y0, x0, y1, x1), plane shape (Y, X))`` in plane pixels."""
BlockFn = Callable[[np.ndarray, Window], tuple[np.ndarray, "np.ndarray | None"]]
"""``(planes (n, wh, ww) raw, window) -> (region (n, h, w), 2x region (n, 2h, 2w) or None)``."""
Block = tuple[tuple[slice, ...], slice, slice]
"""Leading-axes slices, then y and x slices of the region, in source pixels."""


def stream_blocks(src: Any, fn: BlockFn, dst: Any, sr_dst: Any = None, *, context: int, block_size: int,
                  align: int, prefetch: int = 2, progress: bool = True,
                  blocks: Sequence[Block] | None = None) -> int:
    """Compute `dst` (and `sr_dst`) block by block from the windows of `src` that `fn` needs.

    Parameters
    ----------
    src : array ``(..., Y, X)`` read by slicing into numpy (zarr.Array, `n2sr.io.planes.Selection`,
        a dask array); indexed with an integer per leading axis.
    fn : computes one block from its window (see `BlockFn`).
    dst : zarr.Array ``(..., Y, X)`` created by the caller; `fn`'s result is stored as it is.
    sr_dst : zarr.Array ``(..., 2Y, 2X)``, optional.
    context : pixels of the source each block needs beyond its region on every side.
    block_size : target side of a block's region; leading axes take as many whole chunks as
        keep a block within ``block_size**2`` pixels per plane-region times planes.
    align : windows start and end on this grid (the network's pooling multiple).
    prefetch : blocks read ahead and written behind.
    blocks : only these blocks (a part of a scattered job, `n2sr.io.parts`), each checked to
        cover whole chunks (shards) of every target before anything is written; default: the
        whole `block_grid`.

    Returns the number of blocks computed.
    """
    shape = tuple(src.shape)
    targets = _targets(shape, dst, sr_dst)
    grid = block_grid(shape, [(_grid(t), scale) for t, scale, _ in targets], block_size)
    blocks = grid if blocks is None else blocks
    for target, scale, name in targets:
        check_blocks(blocks, target, scale, name)
    _run(blocks, src, fn, [t for t, _, _ in targets], context, align, prefetch, progress)
    return len(blocks)


def block_grid(shape: Sequence[int], grids: Sequence[tuple[Sequence[int], int]], block_size: int) -> list[Block]:
    """Every block of a stack of `shape`, in order (leading axes outermost, then y, then x).

    `grids` holds the chunk (shard) shape of each target and its scale on y and x (1, or 2 for
    the super-resolved output); every block edge falls on every target's grid, or at its end.
    The order is the one parts of a scattered job cut into runs (`n2sr.io.parts`).
    """
    *lead, ny, nx = shape
    units = [_unit(axis, len(shape), grids) for axis in range(len(shape))]
    side_y, side_x = (max(u, block_size // u * u) for u in units[-2:])
    region = min(side_y, ny) * min(side_x, nx)
    planes = max(1, block_size * block_size // region)
    lead_sides = []
    for axis, n in enumerate(lead):
        side = max(units[axis], planes // units[axis] * units[axis])
        lead_sides.append(side)
        planes = max(1, planes // max(1, min(side, n)))
    edges = [_split(n, side) for n, side in zip(shape, [*lead_sides, side_y, side_x])]
    return [(tuple(lead_slices), ys, xs) for *lead_slices, ys, xs in itertools.product(*map(_slices, edges))]


def _targets(shape: tuple[int, ...], dst: Any, sr_dst: Any) -> list[tuple[Any, int, str]]:
    """(array, scale, name) of each output, checked to fit the source's `shape`."""
    check_target(dst, shape, "dst")
    *lead, ny, nx = shape
    targets = [(dst, 1, "dst")]
    if sr_dst is not None:
        check_target(sr_dst, (*lead, 2 * ny, 2 * nx), "sr_dst")
        targets.append((sr_dst, 2, "sr_dst"))
    return targets


def _grid(target: Any) -> tuple[int, ...]:
    return tuple(target.shards or target.chunks)


def _run(blocks: Sequence[Block], src: Any, fn: BlockFn, targets: list, context: int, align: int,
         prefetch: int, progress: bool) -> None:
    """Read ahead, compute here, write behind; the first error stops the run and is raised.

    At any time at most `prefetch` blocks are read ahead of the one computed and at most
    `prefetch` computed blocks wait to be written (``prefetch=0``: everything in turn).
    """
    *_, ny, nx = src.shape
    reads: deque[Future] = deque()
    writes: deque[Future] = deque()
    submitted = 0
    with ThreadPoolExecutor(1, thread_name_prefix="n2sr-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="n2sr-write") as writer, \
            tqdm(total=len(blocks), desc="denoise", unit="block", disable=not progress) as bar:

        def read_up_to(count: int) -> None:
            nonlocal submitted
            while submitted < len(blocks) and len(reads) < count:
                reads.append(reader.submit(_read, src, blocks[submitted], context, align, ny, nx))
                submitted += 1

        for block in blocks:
            read_up_to(1)
            planes, window = reads.popleft().result()
            read_up_to(prefetch)
            results = fn(planes, window)
            while writes and len(writes) >= max(prefetch, 1):
                writes.popleft().result()
            writes.append(writer.submit(_write, targets, block, results))
            if prefetch == 0:
                writes.popleft().result()
            bar.update()
        for future in writes:
            future.result()


def _read(src: Any, block: Block, context: int, align: int, ny: int, nx: int) -> tuple[np.ndarray, Window]:
    lead, ys, xs = block
    (wy0, wy1), (wx0, wx1) = _window(ys.start, ys.stop, ny, context, align), _window(xs.start, xs.stop, nx, context, align)
    planes = [np.asarray(src[(*index, slice(wy0, wy1), slice(wx0, wx1))]) for index in _indices(lead)]
    return np.stack(planes), ((wy0, wx0), (ys.start, xs.start, ys.stop, xs.stop), (ny, nx))


def _write(targets: list, block: Block, results: tuple[np.ndarray, np.ndarray | None]) -> None:
    lead, ys, xs = block
    extents = tuple(s.stop - s.start for s in lead)
    for target, data, scale in zip(targets, results, (1, 2)):
        if data is None:
            continue
        region = (*lead, slice(scale * ys.start, scale * ys.stop), slice(scale * xs.start, scale * xs.stop))
        target[region] = data.reshape(*extents, *data.shape[-2:])


def _indices(lead: tuple[slice, ...]) -> Iterator[tuple[int, ...]]:
    return itertools.product(*(range(s.start, s.stop) for s in lead))


def _window(start: int, stop: int, size: int, context: int, align: int) -> tuple[int, int]:
    """``[start, stop)`` widened by `context` and rounded out to the `align` grid, within ``[0, size)``."""
    return max(0, (start - context) // align * align), min(size, -(-(stop + context) // align) * align)


def _unit(axis: int, ndim: int, grids: Sequence[tuple[Sequence[int], int]]) -> int:
    """Smallest block side along `axis` that covers whole chunks (shards) of every target: a
    target `scale` times larger on y and x needs sides whose `scale` multiple is whole."""
    unit = 1
    for grid, scale in grids:
        factor = scale if axis >= ndim - 2 else 1
        unit = math.lcm(unit, grid[axis] // math.gcd(grid[axis], factor))
    return unit


def _split(size: int, side: int) -> list[int]:
    """Block lengths along an axis of `size` cut every `side`: ``[side, ..., side, rest]``."""
    return [min(side, size - start) for start in range(0, size, side)]


def _slices(lengths: list[int]) -> list[slice]:
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    return [slice(int(a), int(a) + n) for a, n in zip(starts, lengths)]


def check_blocks(blocks: Sequence[Block], target: Any, scale: int, name: str) -> None:
    """Refuse blocks unless each starts and ends on `target`'s chunk (shard) grid or at its end
    (`scale`: the target's size per source pixel on y and x), so no two writers share a chunk."""
    grid, shape = _grid(target), tuple(target.shape)
    ndim = len(shape)
    for lead, ys, xs in blocks:
        for axis, s in enumerate((*lead, ys, xs)):
            factor = scale if axis >= ndim - 2 else 1
            for edge in (s.start * factor, s.stop * factor):
                if edge % grid[axis] and edge != shape[axis]:
                    raise ValueError(f"{name}: a block edge at {edge} on axis {axis} splits a chunk of {grid[axis]}; "
                                     "writes would lose data")


def check_target(arr: Any, shape: tuple[int, ...], name: str) -> None:
    """Outputs are created by the caller; refuse ones that would truncate or not fit."""
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    if np.dtype(arr.dtype).kind not in "fiu":
        raise ValueError(f"{name} has dtype {arr.dtype}; create it with a real numeric dtype")
