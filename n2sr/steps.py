"""The pipeline's steps as plain functions: files in, files out.

Each Snakemake rule and each CLI command calls exactly one of these; a notebook can call
them too. They only wire I/O to the numerics (`train`, `denoise`, `metrics`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from n2sr import io, omezarr

log = logging.getLogger(__name__)


def load_planes(path: str | os.PathLike[str], captures: Sequence[int] | None = None) -> np.ndarray:
    """All planes of an image as ``ndarray (N, Y, X)`` in the source dtype.

    `captures` selects indices on the leading axis (``t`` of an OME-Zarr, pages of a TIFF
    stack); a capture that does not exist is an input error naming the file.
    """
    path = Path(path)
    if io.kind_of(path) == "zarr":
        arr = io.open_zarr_array(io.check_exists(path))
        n = arr.shape[0]
        picked = range(n) if captures is None else captures
        _check_captures(path, picked, n)
        data = np.stack([np.asarray(arr[t]) for t in picked])
        io.check_finite(path, data)
    else:
        data = io.read_image(path)
        if captures is not None:
            n = data.shape[0] if data.ndim >= 3 else 1
            _check_captures(path, captures, n)
            data = data[list(captures)] if data.ndim >= 3 else data[None]
    return data.reshape(-1, *data.shape[-2:])


def _check_captures(path: Path, captures: Sequence[int], n: int) -> None:
    bad = [t for t in captures if not 0 <= t < n]
    if bad:
        raise io.InputError(path, f"has {n} capture(s) (t = 0..{n - 1}); captures {bad} do not exist")


def train_step(images: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], cfg, *,
               captures: Sequence[int] | None = None, curve: str | os.PathLike[str] | None = None,
               plot: str | os.PathLike[str] | None = None, resume: bool = False):
    """Train one model on every plane of `images` (the selected captures of each)."""
    from n2sr.train import train, write_curve

    planes, sources = [], []
    for path in images:
        stack = load_planes(path, captures)
        for i, plane in enumerate(stack):
            if min(plane.shape) < cfg.patch_size:
                raise io.InputError(path, f"plane of {plane.shape[0]}x{plane.shape[1]} pixels is smaller than the "
                                          f"training patch ({cfg.patch_size}); lower patch_size")
            planes.append(plane)
            sources.append(f"{path}[{i}]")
    result = train(planes, cfg, out, resume=resume, sources=sources)
    write_curve(result.curve, curve, plot)
    log.info("trained %d iterations in %.0f s; best validation loss %.5g at iteration %d -> %s",
             result.steps, result.seconds, result.best_val, result.best_step, out)
    return result
