"""The crops of a large plane that its reference-free estimates are computed on.

A plane of more than ``denoise.estimate_pixels`` is estimated on a few crops spread over it, each
run with the denoiser's context around it, so the estimates cost (and hold in memory) about that
many pixels however large the plane (`n2sr.estimate.cropped_sure`, `n2sr.nn.probe`); their
error then includes the spread between the crops (`n2sr.estimate.pooled`). Measured against whole-plane
estimates in ``benchmarks/results/estimate_cost.md``.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class Crop(NamedTuple):
    """Part of a plane an estimate is computed on: `region` ``(y0, x0, y1, x1)`` is estimated,
    `window` (the region plus the denoiser's context, within the plane) is what the denoiser sees."""

    region: tuple[int, int, int, int]
    window: tuple[int, int, int, int]

    @property
    def inner(self) -> tuple[slice, slice]:
        """The region inside an array of the window."""
        (y0, x0, y1, x1), (wy, wx) = self.region, self.window[:2]
        return slice(y0 - wy, y1 - wy), slice(x0 - wx, x1 - wx)

    @property
    def window_pixels(self) -> int:
        return (self.window[2] - self.window[0]) * (self.window[3] - self.window[1])

    @property
    def region_pixels(self) -> int:
        return (self.region[2] - self.region[0]) * (self.region[3] - self.region[1])

    def widened(self, margin: int, shape: tuple[int, int], align: int = 1) -> Crop:
        """The same region with a window of `margin` pixels around it, rounded out to the
        `align` grid (as the streamed blocks' windows are) and clipped to the plane."""
        (y0, x0, y1, x1), (ny, nx) = self.region, shape
        return Crop(self.region, (max(0, (y0 - margin) // align * align), max(0, (x0 - margin) // align * align),
                                  min(ny, -(-(y1 + margin) // align) * align), min(nx, -(-(x1 + margin) // align) * align)))


CROP_TILES = 2
"""`crops` of a large plane: a CROP_TILES x CROP_TILES grid (benchmarks/results/estimate_cost.md)."""


def crops(shape: tuple[int, int], pixels: int, margin: int, align: int = 1,
          tiles: int | None = None) -> list[Crop] | None:
    """Regions of a plane totalling about `pixels`, with windows of `margin` around them
    (`Crop.widened`): ``tiles x tiles`` (default `CROP_TILES`) equal rectangles, each centred in
    its cell of a ``tiles x tiles`` grid over the plane (deterministic, spread over it).

    None (the whole plane) where `pixels` is 0, the plane has no more than `pixels`, or the
    windows, run twice (SURE's two passes), would cost as much as one pass on the whole plane.
    """
    ny, nx = shape
    if not pixels or ny * nx <= pixels:
        return None
    tiles = tiles or CROP_TILES
    per = max(1, pixels // (tiles * tiles))
    th = max(1, min(ny // tiles, math.isqrt(per)))
    tw = max(1, min(nx // tiles, per // th))
    th = max(1, min(ny // tiles, per // tw))  # a narrow plane gives the rest of the budget to the other axis
    out = []
    for i in range(tiles):
        for j in range(tiles):
            y0, x0 = (2 * i + 1) * ny // (2 * tiles) - th // 2, (2 * j + 1) * nx // (2 * tiles) - tw // 2
            out.append(Crop((y0, x0, y0 + th, x0 + tw), (y0, x0, y0 + th, x0 + tw)).widened(margin, shape, align))
    return out if 2 * sum(c.window_pixels for c in out) < ny * nx else None
