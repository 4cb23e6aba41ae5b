"""Step `reference`: the clean reference of a field of view, as a t=1 OME-Zarr.

The source is either the ingested captures (an OME-Zarr with t > 1 or t = 1), averaged, or a
given reference file (TIFF/PNG), copied as it is. One command for both, so the workflow's
rule does not choose between commands.

The reference policy (`n2sr.config.REFERENCE_POLICIES`) says which: ``file`` converts a given
file, ``average`` averages the captures, ``none`` writes no image but a marker whose attributes say why there is
no reference (`no_reference` reads it; evaluation then reports reference-free estimates only).
``auto`` averages only repeated captures (t > 1): a single capture, or a z-stack of one time
point, is never its own reference, so it gets ``none``.

FMD's ``avg50.png`` is ``floor(mean + 0.5)`` of its 50 captures, cast back to uint8.
Reproducing that exactly (not ``np.round``, which rounds .5 ties to even and so differs
on about 1 % of pixels) makes our references bit-identical to the published ones, so
PSNR numbers are comparable with the literature.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr

from n2sr.config import REFERENCE_POLICIES
from n2sr.errors import InputError
from n2sr.io import omezarr, sources
from n2sr.io.atomic import atomic_path
from n2sr.io.guard import check_outputs
from n2sr.io.images import check_exists, kind_of, read_zarr
from n2sr.steps.ingest import ingest


def round_half_up(total: np.ndarray, n: int, dtype: np.dtype) -> np.ndarray:
    """``floor(total / n + 0.5)`` in exact integer arithmetic: ``(2 total + n) // 2n``."""
    return ((2 * total + n) // (2 * n)).astype(dtype)


def reference(source: str | os.PathLike[str], out_zarr: str | os.PathLike[str], policy: str = "auto") -> Path:
    """Write the reference of `source` to `out_zarr` under `policy` (see the module docstring):
    a given reference file (TIFF, PNG) converted as it is, the average of an OME-Zarr's
    captures, or the marker of no reference."""
    if policy not in REFERENCE_POLICIES:
        raise ValueError(f"reference policy must be one of {', '.join(REFERENCE_POLICIES)}, not {policy!r}")
    if kind_of(check_exists(source)) != "zarr":
        if policy not in ("auto", "file"):
            raise InputError(source, f"is a reference file, but the reference policy is {policy}; "
                                     "give the ingested captures instead, or policy file")
        return ingest(source, out_zarr)
    if policy == "file":  # a given OME-Zarr reference: its captures' mean (itself when t = 1)
        return average(source, out_zarr)
    n_t, n_c, n_z = omezarr.open_image(source).shape[:3]
    if policy == "none":
        return write_none(source, out_zarr, "reference_policy none")
    if n_t == 1:
        why = (f"one capture (t = 1{f', a stack of {n_z} z-planes' if n_z > 1 else ''}) and no reference file: "
               "averaging would score the image against itself")
        if policy == "average":
            raise InputError(source, f"{why}; set reference_policy none (or auto) or give a reference file")
        return write_none(source, out_zarr, why)
    return average(source, out_zarr)


def write_none(source: str | os.PathLike[str], out_zarr: str | os.PathLike[str], reason: str) -> Path:
    """The marker of a field of view without a reference: an OME-Zarr group without an image,
    its attributes naming the policy and the reason (read by `no_reference`)."""
    check_outputs([check_exists(source)], [out_zarr])
    out_path = Path(out_zarr)
    with atomic_path(out_path) as tmp:
        zarr.open_group(store=os.fspath(tmp), mode="w-", zarr_format=3,
                        attributes={"n2sr": {"step": "reference", "reference": "none", "reason": reason,
                                             "source": str(Path(source).resolve())}})
    return out_path


def no_reference(path: str | os.PathLike[str]) -> str | None:
    """Why `path` holds no reference (a `write_none` marker), or None for a real reference."""
    if kind_of(check_exists(path)) != "zarr":
        return None
    attrs = omezarr.read_attrs(path)
    return str(attrs.get("reason", "no reference")) if attrs.get("reference") == "none" else None


def average(in_zarr: str | os.PathLike[str], out_zarr: str | os.PathLike[str]) -> Path:
    """Average the captures on t of an OME-Zarr image into a t=1 OME-Zarr at `out_zarr`.

    Streams one plane at a time (memory: one accumulator plane per c, z), so stacks larger
    than memory work. Integers accumulate exactly in int64, floats in float64; the result
    matches ``floor(mean + 0.5)`` over the whole stack.
    """
    check_outputs([check_exists(in_zarr)], [out_zarr])
    src = omezarr.open_image(in_zarr)
    if src.ndim != 5 or src.shape[0] == 0:
        raise InputError(in_zarr, f"array shape {src.shape}; expected an OME-Zarr (t, c, z, y, x) with t >= 1")
    n_t, n_c, n_z, ny, nx = src.shape
    src_attrs = omezarr.read_attrs(in_zarr)
    sources.check(in_zarr, src_attrs)
    attrs = {
        "step": "reference",
        "method": "mean over t, floor(mean + 0.5) for integers",
        "captures": n_t,
        "source": str(Path(in_zarr).resolve()),
        "derived_from": src_attrs,
    }
    is_int = np.issubdtype(src.dtype, np.integer)
    out_dtype = src.dtype if is_int else np.float32
    out_path = Path(out_zarr)
    with atomic_path(out_path) as tmp:
        out = omezarr.create_image(tmp, (1, n_c, n_z, ny, nx), out_dtype, attrs=attrs)
        for c, z in np.ndindex(n_c, n_z):
            total = np.zeros((ny, nx), dtype=np.int64 if is_int else np.float64)
            for t in range(n_t):
                total += read_zarr(in_zarr, src, (t, c, z))
            out[0, c, z] = round_half_up(total, n_t, src.dtype) if is_int else (total / n_t).astype(np.float32)
    return out_path
