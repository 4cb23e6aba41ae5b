"""Tile specs and blending windows for tiled inference (pure numpy, no torch, no I/O).

A plane is cut into *cores* that partition it; each tile is its core plus an overlap of
context on every side that is not an image border. Two choices make tiled output equal
the whole-plane output:

- every core start and overlap is a multiple of `align` (the network's pooling multiple), so
  each tile sees the same pooling grid as the whole plane and interior tiles need no padding;
- with an overlap of at least the receptive field, tiles meet in a hard cut at the core
  boundary (weights 0 or 1), so every kept pixel was computed with its whole receptive field
  and is taken from one tile unchanged: no blending arithmetic to round.

With a smaller overlap, neighbouring tiles cross-fade over the whole overlap with raised-cosine
ramps that sum to 1, so the seam the missing context leaves is not visible. Outputs are blended
as ``sum(w * out) / sum(w)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from n2sr.config import MULTIPLE


def round_up(n: int, multiple: int) -> int:
    """Smallest multiple of `multiple` that is >= `n`."""
    return -(-n // multiple) * multiple


def overlap_pixels(overlap: int | str, receptive_field: int, align: int = MULTIPLE) -> int:
    """The context around every tile and block, in input pixels: `overlap` ("exact": the receptive
    field) rounded up to `align`, so windows start on the pooling grid. The one place it is rounded."""
    if overlap == "exact":
        overlap = receptive_field
    if not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"overlap must be 'exact' or an integer >= 0, got {overlap!r}")
    return round_up(overlap, align)


def tile_starts(size: int, tile: int, align: int) -> list[int]:
    """Start of each core along an axis of `size` pixels: ``0, tile, 2 * tile, ...``.

    Cores are `tile` long except the last, which runs to the end of the axis. A remainder
    shorter than `align` joins the previous core instead, so no tile is thinner than the
    pooling multiple (the network could not reflect-pad it).
    """
    if size < 1:
        raise ValueError(f"axis size must be >= 1, got {size}")
    if tile < align or tile % align:
        raise ValueError(f"tile {tile} must be a positive multiple of {align} (the network's pooling "
                         f"multiple); use {max(align, tile // align * align)} or {round_up(max(tile, 1), align)}")
    starts = list(range(0, size, tile))
    if len(starts) > 1 and size - starts[-1] < align:
        starts.pop()
    return starts


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in pixels of the plane.

    The network sees ``[start, stop)``; the tile is responsible for ``[core_start, core_stop)``.
    `fade` holds the half-widths of the cross-fades centred on ``core_start`` and ``core_stop``
    (0 at an image border, or for a hard cut).
    """

    start: int
    stop: int
    core_start: int
    core_stop: int
    fade: tuple[int, int]

    def scaled(self, factor: int) -> "Span":
        """The same span in an output `factor` times larger (the 2x super-resolved plane)."""
        return Span(factor * self.start, factor * self.stop, factor * self.core_start, factor * self.core_stop,
                    (factor * self.fade[0], factor * self.fade[1]))

    def weights(self) -> np.ndarray:
        """Blending weight over ``[start, stop)``: ``ndarray (stop - start,) float32 in [0, 1]``.

        Zero in the overlap beyond the cross-fades, so a neighbour's pixels always win there.
        """
        margins = (self.core_start - self.fade[0] - self.start, self.stop - self.core_stop - self.fade[1])
        return blend_window(self.stop - self.start, margins, (2 * self.fade[0], 2 * self.fade[1]))


def spans(size: int, tile: int, overlap: int, align: int, receptive_field: int, fixed: bool = False) -> list[Span]:
    """Tiles along one axis: cores from `tile_starts`, each widened by `overlap` on both sides.

    ``fixed=True`` gives every window the same length, ``min(size, tile + 2 * overlap)``: border
    windows reach further inside instead of being cut short (more context, same weights), so one
    network input shape serves a whole plane (one compiled graph, full batches). It needs `size`
    to be a multiple of `align` (pad the plane first).

    `overlap` must be a multiple of `align` (`overlap_pixels` makes it one), so every span
    starts on the pooling grid.
    Where two cores meet with ``overlap >= receptive_field``, the cut is hard: each tile keeps
    its core, which it computed exactly, so stitching is exact (bitwise, given convolutions that
    sum in the same order for every shape). A smaller overlap cannot be exact; both tiles then
    cross-fade over `overlap` pixels either side of the boundary to hide the seam. Fades never
    reach past a neighbouring core, so they always fit in both windows.
    """
    if overlap < 0 or receptive_field < 0:
        raise ValueError(f"overlap ({overlap}) and receptive_field ({receptive_field}) must be >= 0")
    if overlap % align:
        raise ValueError(f"overlap {overlap} is not a multiple of {align}; round it with overlap_pixels")
    starts = tile_starts(size, tile, align)
    stops = starts[1:] + [size]
    reach = 0 if overlap >= receptive_field else overlap
    fades = [0] + [min(reach, b - a, c - b) for a, b, c in zip(starts, stops, stops[1:])] + [0]
    if not fixed:
        return [Span(max(0, a - overlap), min(size, b + overlap), a, b, (fades[i], fades[i + 1]))
                for i, (a, b) in enumerate(zip(starts, stops))]
    if size % align:
        raise ValueError(f"fixed windows need an axis that is a multiple of {align}, got {size}; pad the plane")
    length = min(size, tile + 2 * overlap)
    if length == size:  # every window would be the whole axis: one tile
        return [Span(0, size, 0, size, (0, 0))]
    return [Span(min(max(0, a - overlap), size - length), min(max(0, a - overlap), size - length) + length, a, b,
                 (fades[i], fades[i + 1])) for i, (a, b) in enumerate(zip(starts, stops))]


def blend_window(length: int, margins: tuple[int, int], ramps: tuple[int, int]) -> np.ndarray:
    """Weight 0 over ``margins[0]``, raised-cosine rise over ``ramps[0]``, 1, fall over ``ramps[1]``, 0 over ``margins[1]``.

    Rise and fall are sampled at pixel centres, so a rise and a fall over the same pixels sum
    to exactly 1 and every pixel inside a ramp has a weight strictly between 0 and 1.

    Returns
    -------
    ndarray (length,) float32 in [0, 1]
    """
    if min(*margins, *ramps) < 0:
        raise ValueError(f"margins {margins} and ramps {ramps} must be >= 0")
    ones = length - sum(margins) - sum(ramps)
    if ones < 0:
        # The two ramps of a short core overlap: combine the sides multiplicatively instead.
        if max(margins[0] + ramps[0], margins[1] + ramps[1]) > length:
            raise ValueError(f"window of {length} is shorter than a margin plus its ramp {margins}, {ramps}")
        return blend_window(length, (margins[0], 0), (ramps[0], 0)) * blend_window(length, (0, margins[1]), (0, ramps[1]))
    rise = [_rise(r) for r in ramps]
    return np.concatenate([np.zeros(margins[0]), rise[0], np.ones(ones), rise[1][::-1],
                           np.zeros(margins[1])]).astype(np.float32)


def _rise(n: int) -> np.ndarray:
    """Raised cosine from near 0 to near 1 over `n` pixel centres: ``ndarray (n,) float64``."""
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)


@dataclass(frozen=True)
class Tile:
    """A 2-D tile: one `Span` per axis."""

    y: Span
    x: Span

    def window(self, scale: int = 1) -> tuple[slice, slice]:
        """Slices of what the network sees, in a plane `scale` times the input size."""
        return (slice(scale * self.y.start, scale * self.y.stop), slice(scale * self.x.start, scale * self.x.stop))

    def weights(self, scale: int = 1) -> np.ndarray:
        """Separable blending weight over `window(scale)`: ``ndarray (h, w) float32``."""
        return np.outer(self.y.scaled(scale).weights(), self.x.scaled(scale).weights())


def tiles(shape: tuple[int, int], tile: int, overlap: int, align: int, receptive_field: int,
          fixed: bool = False) -> list[Tile]:
    """Row-major tiles of a ``(Y, X)`` plane with cores of `tile` pixels a side (see `spans`)."""
    ny, nx = shape
    return [Tile(sy, sx) for sy in spans(ny, tile, overlap, align, receptive_field, fixed)
            for sx in spans(nx, tile, overlap, align, receptive_field, fixed)]
