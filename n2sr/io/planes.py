"""Capture selection: which planes of an input a step works on, decided in one place.

Inputs are TIFF, PNG or Zarr; their leading axis is the capture axis (``t`` of an OME-Zarr,
the pages of a TIFF stack). `select` cuts it to the requested captures and checks that they
exist, returning a view that reads planes lazily (Zarr) so a step can stream.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from n2sr.errors import InputError
from n2sr.io import images, omezarr, sources


@dataclass(frozen=True)
class Selection:
    """The selected captures of an input: ``shape`` is the input's with the leading axis cut.

    Indexing with a leading integer ``i`` reads capture ``captures[i]`` of the source only.
    """

    path: Path
    source: Any  # zarr.Array or ndarray (..., Y, X)
    captures: list[int]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.captures), *self.source.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.source.dtype)

    def __getitem__(self, key: tuple) -> np.ndarray:
        first, *rest = key if isinstance(key, tuple) else (key,)
        if not isinstance(first, (int, np.integer)):
            raise TypeError("index a Selection with an integer capture first")
        index = (self.captures[first], *rest)
        plane = (images.read_zarr(self.path, self.source, index) if not isinstance(self.source, np.ndarray)
                 else np.asarray(self.source[index]))
        images.check_finite(self.path, plane)
        return plane

    def read(self) -> np.ndarray:
        """All selected captures in memory: ``ndarray (n, ..., Y, X)`` in the source dtype."""
        return np.stack([self[i, ...] for i in range(len(self.captures))])


class PlaneView(NamedTuple):
    """Plane `index` (its leading indices) of a `Selection`, read only where sliced: the estimates
    of a huge plane read their crops, not the plane."""

    selection: Selection
    index: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.selection.shape[-2:])

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        return self.selection[(*self.index, *key)]


def select(path: str | os.PathLike[str], captures: Sequence[int] | None = None) -> Selection:
    """The captures of `path` to work on (all when None); a missing one is an error naming the file.

    A 2-D image (one PNG plane) is one capture. Zarr inputs are read lazily; TIFF and PNG are
    read whole (use ingest for stacks larger than memory).
    """
    path = images.check_exists(path)
    if images.kind_of(path) == "zarr":
        source = images.open_zarr_array(path)
        sources.check(path, omezarr.read_attrs(path))
    else:
        source = images.read_image(path)
        if source.ndim == 2:
            source = source[None]
    n = source.shape[0]
    picked = list(range(n)) if captures is None else [int(t) for t in captures]
    bad = [t for t in picked if not 0 <= t < n]
    if bad:
        raise InputError(path, f"has {n} capture(s) (t = 0..{n - 1}); captures {bad} do not exist")
    return Selection(path, source, picked)


def load_planes(path: str | os.PathLike[str], captures: Sequence[int] | None = None) -> np.ndarray:
    """The selected captures as planes: ``ndarray (N, Y, X)`` in the source dtype."""
    data = select(path, captures).read()
    return data.reshape(-1, *data.shape[-2:])


def capture_ids(path: str | os.PathLike[str], n: int) -> list[int]:
    """Original capture indices of the `n` planes of `path`: a denoised Zarr records them."""
    if images.kind_of(path) == "zarr":
        recorded = omezarr.read_attrs(path).get("captures")
        if recorded is not None and len(recorded) == n:
            return list(recorded)
    return list(range(n))
