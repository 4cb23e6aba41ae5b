"""Multiscale levels of an OME-Zarr image, so viewers open a 20k x 20k plane at any zoom.

napari and other OME-Zarr viewers read the coarsest level that fits the screen; an image with
level ``0`` only makes them load full planes. Each level is the 2x2 mean of the one above (y and
x only: t, c and z are not resampled), down to the first level whose larger side is at most
`max_side`. Levels are computed out of core by dask from the level above, one plane chunk at a
time, and written chunk-aligned (dask chunks = the level's Zarr chunks, no shards), so memory
stays bounded by a few chunks whatever the image size.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zarr

from n2sr.io.omezarr import AXES, COMPRESSOR, MAX_CHUNK, plane_chunks


def levels_needed(shape: tuple[int, ...], max_side: int) -> int:
    """How many levels below ``0`` a plane of `shape` gets: halvings until its larger side <=
    `max_side` (0: none)."""
    if max_side <= 0:
        return 0
    side, n = max(shape[-2:]), 0
    while side > max_side:
        side, n = (side + 1) // 2, n + 1
    return n


def add_levels(path: str | os.PathLike[str], max_side: int) -> int:
    """Write levels ``1..n`` of the OME-Zarr image at `path` (level ``0`` complete) and record them
    in its NGFF ``multiscales``; return n (0: the image is small enough, nothing written)."""
    group = zarr.open_group(store=os.fspath(path), mode="r+")
    source = group["0"]
    n = levels_needed(source.shape, max_side)
    if n == 0:
        return 0
    import dask  # here: every step writing Zarr imports this module, and dask takes 0.4 s to import
    import dask.array as da

    ome = dict(group.attrs["ome"])
    multiscale = dict(ome["multiscales"][0])
    base = [float(s) for s in multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]]
    datasets = [multiscale["datasets"][0]]
    for level in range(1, n + 1):
        coarse = _halve(da.from_zarr(source), source.dtype)
        target = group.create_array(str(level), shape=coarse.shape, dtype=source.dtype,
                                    chunks=plane_chunks(coarse.shape), compressors=COMPRESSOR, fill_value=0,
                                    dimension_names=AXES)
        with dask.config.set(scheduler="threads", num_workers=2):  # two chunks in flight at most
            da.store(coarse.rechunk(target.chunks), target, lock=False)
        datasets.append({"path": str(level), "coordinateTransformations": transforms(base, level)})
        source = target
    multiscale["datasets"] = datasets
    ome["multiscales"] = [multiscale, *ome["multiscales"][1:]]
    group.attrs["ome"] = ome
    return n


def transforms(base: list[float], level: int) -> list[dict[str, Any]]:
    """NGFF transforms of `level`: pixels 2**level times larger, whose centres sit half a level-0
    block to the lower right of the block's first pixel (a 2x2 mean's centre)."""
    f = 2 ** level
    scale = [*base[:3], base[3] * f, base[4] * f]
    shift = [0.0, 0.0, 0.0, base[3] * (f - 1) / 2, base[4] * (f - 1) / 2]
    return [{"type": "scale", "scale": scale}, {"type": "translation", "translation": shift}]


def _halve(x: Any, dtype: np.dtype) -> Any:
    """2x2 means in y and x of a dask array; an odd side repeats its last row or column; integers
    rounded half up."""
    import dask.array as da

    pad = [(0, 0)] * 3 + [(0, x.shape[3] % 2), (0, x.shape[4] % 2)]
    if any(p[1] for p in pad):
        x = da.pad(x, pad, mode="edge")
    x = x.rechunk({3: MAX_CHUNK, 4: MAX_CHUNK})  # even block sides (the sides are now even), as coarsen needs
    mean = da.coarsen(np.mean, x.astype(np.float32), {3: 2, 4: 2})
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        mean = da.clip(da.floor(mean + 0.5), info.min, info.max)
    return mean.astype(dtype)
