"""Step `ingest`: raw microscope data (TIFF stack, PNG, or a folder series) -> canonical OME-Zarr.

Ingest is the only step that understands vendor layouts; every later step sees one
``t c z y x`` OME-Zarr with provenance, so it can stream planes and trust the checksums.
A stack is copied plane by plane by a few threads while another hashes it (`n2sr.io.stream`),
so a stack larger than memory ingests in constant memory at close to disk speed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import tifffile
import zarr

from n2sr.config import IngestConfig
from n2sr.errors import InputError
from n2sr.io import omezarr, parts, sources, stream
from n2sr.io.atomic import atomic_path
from n2sr.io.guard import check_outputs
from n2sr.io.images import (
    PNG_SUFFIXES,
    TIFF_SUFFIXES,
    check_exists,
    check_finite,
    first_series,
    image_info,
    kind_of,
    read_image,
    reading,
    sha256_file,
    tiff_plane_axes,
)


def natural_key(name: str) -> list[int | str]:
    """Sort key putting ``img2`` before ``img10``, as a microscope numbers its captures."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def series_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The PNG/TIFF files of a folder series in natural name order (hidden files skipped)."""
    folder = Path(folder)
    files = [
        f for f in folder.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in PNG_SUFFIXES + TIFF_SUFFIXES
    ]
    if not files:
        raise InputError(folder, "folder holds no .png, .tif or .tiff files; expected a series of captures")
    return sorted(files, key=lambda f: natural_key(f.name))


def ingest(source: str | os.PathLike[str], out_zarr: str | os.PathLike[str], cfg: IngestConfig = IngestConfig(), *,
           part: str | None = None) -> Path:
    """Convert `source` to an OME-Zarr image at `out_zarr` and return its path.

    `source` is a TIFF / OME-TIFF / ImageJ stack, a PNG, or a folder of same-shape PNG or
    TIFF planes (repeated captures of one field of view, placed on t in natural name
    order). The output keeps the source dtype; its ``n2sr`` attributes record the source
    path, sha256 (for a folder: of the sorted per-file checksums), dtype, and each raw file's
    path, size, mtime and sha256 (`n2sr.io.sources`: later steps check them). The output appears
    only when complete. `part` runs one stage of a conversion scattered over K jobs
    (``prepare/K``, ``k/K``, ``gather/K``; TIFF stacks, `n2sr.io.parts`); the output is bit for
    bit that of one job. ``cfg.codec`` and ``cfg.clevel`` are the output's Blosc compressor and level
    (``prepare`` sets them for a scattered one: the parts read them from the prepared Zarr);
    ``cfg.part_size`` is the workflow's: it decides K.
    """
    source = check_exists(source)
    out = Path(out_zarr)
    check_outputs([source], [out])
    stage = parts.parse(part) if part is not None else None
    if out.suffix.lower() != ".zarr":
        raise ValueError(f"{out}: ingest writes OME-Zarr; name the output *.zarr")
    is_series = source.is_dir() and not (source / "zarr.json").is_file()
    kind = "folder" if is_series else kind_of(source)
    if kind == "zarr":
        raise InputError(source, "is already Zarr; ingest takes a TIFF, a PNG or a folder of them")
    if stage is not None:
        if kind != "tiff":
            raise InputError(source, "--part converts TIFF stacks; ingest a PNG or a folder in one job")
        _ingest_stage(source, out, stage, cfg)
        return out
    with atomic_path(out) as tmp:
        if kind == "tiff":
            _ingest_tiff(source, tmp, cfg)
        elif kind == "png":
            sha = sha256_file(source)
            _ingest_planes([source], tmp, source, sha, [sha], cfg)
        else:
            files = series_files(source)
            checksums = [sha256_file(f) for f in files]
            combined = hashlib.sha256("\n".join(sorted(checksums)).encode("ascii")).hexdigest()
            _ingest_planes(files, tmp, source, combined, checksums, cfg)
    return out


def _create(path: Path, shape: tuple[int, ...], dtype: np.dtype, attrs: dict[str, Any], cfg: IngestConfig) -> zarr.Array:
    """The empty output: plane chunks in shards of about ``cfg.shard_mb``, ``cfg``'s compressor."""
    return omezarr.create_image(path, shape, dtype, attrs=attrs, codec=omezarr.compressor(cfg.clevel, cfg.codec),
                                shards=omezarr.plane_shards(shape, dtype, cfg.shard_mb))


def _ingest_tiff(path: Path, tmp: Path, cfg: IngestConfig) -> None:
    """Hash, decode and compress at once (`n2sr.io.stream`); the checksum goes in once the planes are in."""
    with stream.hashing(path) as sha256, _tiff(path) as (tif, series, axes, attrs):
        shape = omezarr.tczyx_shape(axes, series.shape)
        writer = stream.ChunkWriter(tmp, _create(tmp, shape, series.dtype, attrs, cfg))
        stream.copy_planes(_tiff_planes(path, tif, series, axes), writer)
        attrs["sha256"] = sha256()
    _finish(path, tmp, attrs)


@contextlib.contextmanager
def _tiff(path: Path) -> Iterator[tuple[tifffile.TiffFile, Any, str, dict[str, Any]]]:
    """The open TIFF, its first series, that series' axes and the provenance (sha256 still empty)."""
    with reading(path, "tiff"):
        tif = tifffile.TiffFile(path)
    with tif:
        with reading(path, "tiff"):
            series = first_series(path, tif)
            axes = tiff_plane_axes(path, series.axes, series.shape)
        _check_dtype(path, series.dtype)
        attrs = _provenance(path, "", series.dtype, series.shape, axes)
        attrs["source_series"] = f"0 of {len(tif.series)}"
        yield tif, series, axes, attrs


def _finish(path: Path, image: Path, attrs: dict[str, Any]) -> None:
    attrs["source_files"] = sources.record([path], [attrs["sha256"]])
    omezarr.write_attrs(image, attrs)


def _ingest_stage(path: Path, out: Path, stage: parts.Stage, cfg: IngestConfig) -> None:
    """One stage of a scattered conversion: prepare the empty partial output and the plan, copy
    part k's run of whole shards (planes; its marker last), or gather: hash the source once, record the
    provenance and publish. Every stage refuses a plan that no longer fits the source."""
    partial = parts.partial(out, out)
    if stage.kind == "gather":
        parts.read_markers(out, stage.count)
        _gather(path, out, partial, stage)
        return
    with _tiff(path) as (tif, series, axes, attrs):
        shape = omezarr.tczyx_shape(axes, series.shape)
        plan = _plan(path, shape, stage)
        if stage.kind == "prepare":
            # K > shards (planes): refused before anything is written
            parts.plane_runs(shape, omezarr.plane_shards(shape, series.dtype, cfg.shard_mb), stage.count)
            parts.clear(out)
            _create(partial, shape, series.dtype, attrs, cfg)
            omezarr.write_attrs(partial, {"parts": plan})
            parts.write_marker(out, stage, plan)
            return
        array = parts.open_partials(out, [out], stage)[0]
        _check_plan(partial, plan)
        runs = parts.plane_runs(shape, array.shards, stage.count)  # prepare's shards, whatever this job's config
        start, stop = runs[stage.index - 1]
        writer = stream.ChunkWriter(partial, array)
        stream.copy_planes(_tiff_planes(path, tif, series, axes, range(start, stop)), writer)
        stream.sync_planes(writer, range(start, stop))
        parts.write_marker(out, stage, {"planes": [start, stop]})


def _plan(path: Path, shape: tuple[int, ...], stage: parts.Stage) -> dict[str, Any]:
    """What every stage must agree on: K, the output's shape, and the source's size and mtime."""
    stat = path.stat()
    return {"count": stage.count, "shape": list(shape), "source_size": stat.st_size,
            "source_mtime_ns": stat.st_mtime_ns}


def _check_plan(partial: Path, plan: dict[str, Any]) -> None:
    recorded = omezarr.read_attrs(partial).get("parts") or {}
    if recorded != plan:
        changed = ", ".join(k for k in plan if recorded.get(k) != plan[k])
        raise InputError(partial, f"was prepared for another source or layout ({changed} differ): the parts "
                                  "would not fit together; rerun prepare")


def _gather(path: Path, out: Path, partial: Path, stage: parts.Stage) -> None:
    """Every part done: the source hashed once (unchanged since prepare), then the output renamed into place."""
    with _tiff(path) as (_, series, axes, attrs):
        _check_plan(partial, _plan(path, omezarr.tczyx_shape(axes, series.shape), stage))
    attrs["sha256"] = sha256_file(path)
    _finish(path, partial, attrs)
    with atomic_path(out) as tmp:
        os.replace(partial, tmp)
    parts.clear(out)


def _tiff_planes(path: Path, tif: tifffile.TiffFile, series: Any, axes: str,
                 select: range | None = None) -> Iterator[stream.Plane]:
    """Every output plane's ``(t, c, z)`` (or those numbered `select` in ``t c z`` order) and a
    function reading it from the TIFF.

    The axis mapping is worked out once on an index grid (one integer per source plane)
    rather than on the pixels, so each output plane is read from exactly one source page. When
    the series is one page per plane, a plane is its page, decoded by the copying thread
    (`TiffPage.asarray` reads under the file's lock); otherwise (a truncated ImageJ file,
    pages in other files, a transform) it is read here through tifffile's Zarr store.
    """
    grid_shape = omezarr.plane_grid(axes, series.shape)
    grid = omezarr.to_tczyx(np.arange(int(np.prod(grid_shape))).reshape(grid_shape), axes)
    paged = _one_page_per_plane(series, axes, int(np.prod(grid_shape)))
    shape = (series.shape[axes.index("Y")], series.shape[axes.index("X")])
    buffers = threading.local()  # one plane buffer per copying thread, reused page after page
    if paged:
        tif.filehandle.set_lock(True)
    else:
        with reading(path, "tiff"):
            src = zarr.open(store=series.aszarr(level=0), mode="r")
    transpose = axes.index("Y") > axes.index("X")
    for number, tcz in enumerate(np.ndindex(grid.shape[:3])):
        if select is not None and number not in select:
            continue
        flat = int(grid[tcz][0, 0])
        if paged:
            with reading(path, "tiff"), tif.filehandle.lock:  # pages are parsed lazily, from the shared handle
                page = series[flat]
            yield tcz, functools.partial(_read_page, path, page, series.dtype, shape, buffers)
            continue
        index: list[Any] = list(np.unravel_index(flat, grid_shape))
        index[axes.index("Y")] = index[axes.index("X")] = slice(None)
        with reading(path, "tiff"):  # only reads: a full disk is not a corrupt input
            plane = np.asarray(src[tuple(index)])
        plane = plane.T if transpose else plane
        check_finite(path, plane)
        yield tcz, functools.partial(_given, plane)


def _one_page_per_plane(series: Any, axes: str, planes: int) -> bool:
    """Whether page i of `series` is exactly plane i of its ``...YX(S)`` grid."""
    key = series.keyframe
    plane_last = axes.replace("S", "").endswith("YX") and ("S" not in axes or axes.endswith("S"))
    return (plane_last and len(series) == planes and not series.is_multifile and series.transform is None
            and np.dtype(key.dtype) == np.dtype(series.dtype) and int(np.prod(key.shape)) * planes == series.size)


def _read_page(path: Path, page: Any, dtype: np.dtype, shape: tuple[int, int], buffers: threading.local) -> np.ndarray:
    """Decode `page` into this thread's plane buffer: a fresh array per page costs more in page
    faults than the decoding (``benchmarks/results/ingest.md``). The caller writes it out before
    this thread reads the next page."""
    if page is None:  # a page the file lacks reads as the fill value, as through tifffile's Zarr store
        return np.zeros(shape, dtype)
    buffer = getattr(buffers, "plane", None)
    if buffer is None or buffer.dtype != dtype or buffer.shape != shape:
        buffer = buffers.plane = np.empty(shape, dtype)
    with reading(path, "tiff"):
        plane = page.asarray(out=buffer, maxworkers=1).reshape(shape)
    check_finite(path, plane)
    return plane


def _given(plane: np.ndarray) -> np.ndarray:
    return plane


def _ingest_planes(files: list[Path], tmp: Path, source: Path, sha: str, checksums: list[str],
                   cfg: IngestConfig) -> None:
    """Stack single-plane files on t, checking every file against the first before writing."""
    shape, dtype = _single_plane_info(files[0])
    for f in files[1:]:
        other_shape, other_dtype = _single_plane_info(f)
        if (other_shape, other_dtype) != (shape, dtype):
            raise InputError(
                f,
                f"shape {other_shape} {other_dtype} differs from {files[0].name} ({shape} {dtype}); "
                "all captures in a series must have the same shape and dtype: move the odd file out",
            )
    _check_dtype(files[0], dtype)
    attrs = _provenance(source, sha, dtype, (len(files), *shape), "TYX")
    attrs["source_files"] = sources.record(files, checksums)
    writer = stream.ChunkWriter(tmp, _create(tmp, (len(files), 1, 1, *shape), dtype, attrs, cfg))
    stream.copy_planes((((t, 0, 0), functools.partial(_read_file, f, shape)) for t, f in enumerate(files)), writer)


def _read_file(path: Path, shape: tuple[int, int]) -> np.ndarray:
    return read_image(path).reshape(shape)


def _single_plane_info(path: Path) -> tuple[tuple[int, int], np.dtype]:
    shape, dtype = image_info(path)
    if int(np.prod(shape[:-2])) != 1:
        raise InputError(
            path,
            f"is a stack of {int(np.prod(shape[:-2]))} planes; a folder series takes one plane per file: "
            "ingest the stack file on its own",
        )
    return (shape[-2], shape[-1]), dtype


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    dtype = np.dtype(dtype)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)) or dtype == np.bool_:
        raise InputError(path, f"pixel type {dtype} is not supported; expected integer or real float intensities")


def _provenance(source: Path, sha: str, dtype: np.dtype, shape: tuple[int, ...], axes: str) -> dict[str, Any]:
    return {
        "step": "ingest",
        "source": str(source.resolve()),
        "sha256": sha,
        "source_dtype": np.dtype(dtype).name,
        "source_shape": [int(n) for n in shape],
        "source_axes": axes,
    }
