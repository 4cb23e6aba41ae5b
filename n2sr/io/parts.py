"""Scatter/gather of one huge stack over K jobs: which blocks each part computes, where parts
write, and the publication of the output once every part is done.

A scattered denoise of ``OUT`` runs in three stages (``n2sr denoise ... --part STAGE``):

``prepare/K``  creates the empty outputs under ``.<OUT name>.parts/`` beside ``OUT`` (the
               *partial* outputs, never taken for finished ones) with the block layout recorded.
``k/K``        computes run ``k`` (1-based) of the stack's blocks into them and then writes its
               marker ``part-k-of-K.json`` (atomically, last): a killed part leaves no marker
               and is redone alone; the other parts' files are not touched.
``gather/K``   checks every marker, writes the final provenance and renames the outputs into
               place: ``OUT`` appears only after every part.

Parts are runs of whole blocks of `n2sr.io.blocks.block_grid`, the very blocks a single job
computes, so every block sees the same planes and context whatever K is and the output is bit
for bit that of one job; block edges lie on every output's chunk (shard) grid, so parts never
share a chunk. Evaluation is scattered the same way, by runs of captures, into part CSVs that
``gather/K`` concatenates. Ingest (``n2sr ingest --part``) converts a TIFF stack by runs of whole
output planes, and its ``gather/K`` hashes the source once. The workflow decides K from the
stack's size (`count`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from n2sr.errors import InputError
from n2sr.io import images, omezarr
from n2sr.io.atomic import atomic_path, fsync_path
from n2sr.io.blocks import Block, block_grid

_STAGE = re.compile(r"^(prepare|gather|[0-9]+)/([0-9]+)$")


@dataclass(frozen=True)
class Stage:
    """One stage of a K-part job: ``kind`` prepare, part (with its 1-based ``index``) or gather."""

    kind: Literal["prepare", "part", "gather"]
    count: int
    index: int = 0

    def __str__(self) -> str:
        return f"{self.index if self.kind == 'part' else self.kind}/{self.count}"


def parse(text: str) -> Stage:
    """``prepare/K``, ``k/K`` (1 <= k <= K) or ``gather/K``."""
    match = _STAGE.match(text.strip())
    if not match or int(match.group(2)) < 1:
        raise ValueError(f"--part {text!r}: expected prepare/K, k/K (1 <= k <= K) or gather/K, e.g. 2/4")
    what, count = match.group(1), int(match.group(2))
    if what in ("prepare", "gather"):
        return Stage(what, count)
    if not 1 <= int(what) <= count:
        raise ValueError(f"--part {text!r}: part {what} of {count} does not exist (1 <= k <= K)")
    return Stage("part", count, int(what))


def folder(out: str | os.PathLike[str]) -> Path:
    """Where the parts of `out` write: ``.<name>.parts`` beside it (hidden, and no output name)."""
    out = Path(out)
    return out.with_name(f".{out.name}.parts")


def partial(out: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """The partial of `target` (`out` itself or a companion output such as its ``--sr``)."""
    return folder(out) / Path(target).name


def marker(out: str | os.PathLike[str], index: int | str, count: int | str, suffix: str = ".json") -> str:
    """Part `index`'s marker (or a part's CSV, `suffix` ``.csv``); ``prepare`` for the prepare stage.
    Plain string formatting, so the workflow builds its patterns with it (``{k}`` stays a wildcard)."""
    name = f"prepare-of-{count}.json" if index == "prepare" else f"part-{index}-of-{count}{suffix}"
    return str(folder(out) / name)


def split(n: int, count: int) -> list[tuple[int, int]]:
    """`count` contiguous runs ``[start, stop)`` of `n` items, as equal as can be; none empty."""
    if not 1 <= count <= n:
        raise ValueError(f"{count} parts of {n} block(s) or capture(s): a part would be empty; use at most {n}")
    return [(n * i // count, n * (i + 1) // count) for i in range(count)]


def count(pixels: int, units: int, part_size: int | None) -> int:
    """K: parts of at most about `part_size` pixels, at most one per unit (block or capture)."""
    if part_size is None:
        return 1
    return max(1, min(units, math.ceil(pixels / part_size)))


def denoise_grids(shape: Sequence[int], chunks: Sequence[int], sr: bool) -> list[tuple[tuple[int, ...], int]]:
    """(chunk grid, scale) of the outputs `n2sr denoise` creates for a selection of `shape`
    (5-D) read from chunks `chunks`: the denoised image keeps the input's chunks, the 2x one
    gets `omezarr.plane_chunks`."""
    grids = [(tuple(chunks), 1)]
    if sr:
        grids.append((omezarr.plane_chunks((*shape[:-2], 2 * shape[-2], 2 * shape[-1])), 2))
    return grids


def _selected_shape(path: str | os.PathLike[str], captures: Sequence[int] | None) -> tuple[tuple[int, ...], Any]:
    array = omezarr.open_image(path)
    n = array.shape[0] if captures is None else len(captures)
    return (n, *array.shape[1:]), array


def denoise_count(path: str | os.PathLike[str], captures: Sequence[int] | None, *, part_size: int | None,
                  block_size: int, sr: bool) -> int:
    """K of the scattered denoise of an OME-Zarr (metadata only): its blocks in parts of about `part_size` pixels."""
    if part_size is None:
        return 1
    shape, array = _selected_shape(path, captures)
    blocks = block_grid(shape, denoise_grids(shape, array.chunks, sr), block_size)
    return count(math.prod(shape), len(blocks), part_size)


def evaluate_count(path: str | os.PathLike[str], captures: Sequence[int] | None, *, part_size: int | None) -> int:
    """K of the scattered evaluation of an OME-Zarr (metadata only): runs of whole captures."""
    if part_size is None:
        return 1
    shape, _ = _selected_shape(path, captures)
    return count(math.prod(shape), shape[0], part_size)


def plane_units(shape: Sequence[int], shards: Sequence[int] | None) -> list[tuple[int, int]]:
    """The runs ``[start, stop)`` of planes (numbered in ``t c z`` order) that a scattered ingest
    may not split: each shard's planes (consecutive: `omezarr.plane_shards`), or single planes."""
    n = math.prod(shape[:3])
    if shards is None:
        return [(i, i + 1) for i in range(n)]
    axis = next(a for a in range(3) if shards[a] > 1)
    size, k = shape[axis], shards[axis]  # the innermost axis longer than 1: a shard's planes are consecutive
    return [(outer * size + start, outer * size + min(start + k, size))
            for outer in range(n // size) for start in range(0, size, k)]


def plane_runs(shape: Sequence[int], shards: Sequence[int] | None, count: int) -> list[tuple[int, int]]:
    """`count` runs of whole units (`plane_units`) of planes, as equal as can be; refused (ValueError)
    before anything is written when a run would be empty."""
    units = plane_units(shape, shards)
    if not 1 <= count <= len(units):
        raise ValueError(f"{count} parts of {len(units)} {'shard' if shards else 'plane'}(s): a part would be "
                         f"empty; use at most {len(units)}")
    return [(units[a][0], units[b - 1][1]) for a, b in split(len(units), count)]


def ingest_count(source: str | os.PathLike[str], *, part_size: int | None, shard_mb: float = 0) -> int:
    """K of the scattered ingest of a TIFF stack (its header only): runs of whole shards (planes)
    of about `part_size` pixels. A PNG or a folder series is converted by one job."""
    if part_size is None or Path(source).is_dir() or Path(source).suffix.lower() not in images.TIFF_SUFFIXES:
        return 1
    axes, series_shape, dtype = images.tiff_layout(source)
    shape = omezarr.tczyx_shape(axes, series_shape)
    units = plane_units(shape, omezarr.plane_shards(shape, dtype, shard_mb))
    return count(math.prod(shape), len(units), part_size)


def layout(blocks: Sequence[Block]) -> list[list[int]]:
    """The block starts along each axis: what prepare records and every part must agree with."""
    axes = [[*lead, ys, xs] for lead, ys, xs in blocks]
    return [sorted({a[i].start for a in axes}) for i in range(len(axes[0]))] if axes else []


def write_plan(out: str | os.PathLike[str], stage: Stage, blocks: Sequence[Block]) -> dict:
    """Record the parts' plan in the partial output's attributes (prepare)."""
    plan = {"count": stage.count, "blocks": len(blocks), "block_starts": layout(blocks)}
    omezarr.write_attrs(partial(out, out), {"parts": plan})
    return plan


def open_partials(out: str | os.PathLike[str], targets: Sequence[str | os.PathLike[str]], stage: Stage) -> list[Any]:
    """The prepared partial outputs of `targets`, for writing, refused unless prepared for K parts."""
    path = partial(out, out)
    if not (path / "zarr.json").is_file():
        raise InputError(path, f"missing: run --part prepare/{stage.count} first")
    plan = omezarr.read_attrs(path).get("parts") or {}
    if plan.get("count") != stage.count:
        raise InputError(path, f"was prepared for {plan.get('count')} parts, not {stage.count}; rerun prepare")
    return [omezarr.open_image(partial(out, t), mode="r+") for t in targets]


def part_blocks(out: str | os.PathLike[str], stage: Stage, blocks: Sequence[Block]) -> tuple[list[Block], tuple[int, int]]:
    """This part's run of `blocks`, refused unless the prepared plan has the same blocks
    (another block size, chunking or shape would let parts overlap or leave gaps)."""
    path = partial(out, out)
    plan = omezarr.read_attrs(path)["parts"]
    if plan.get("blocks") != len(blocks) or plan.get("block_starts") != layout(blocks):
        raise InputError(path, f"was prepared with other block boundaries ({plan.get('blocks')} blocks, this job "
                               f"cuts {len(blocks)}): block_size, chunks or input differ; rerun prepare")
    start, stop = split(len(blocks), stage.count)[stage.index - 1]
    return list(blocks[start:stop]), (start, stop)


def sync_blocks(path: str | os.PathLike[str], array: Any, blocks: Sequence[Block], scale: int = 1) -> None:
    """fsync the chunk (shard) files `blocks` wrote into array ``0`` of the OME-Zarr `path`
    (``scale``: the array's size per source pixel on y and x), and their folders: a part's marker
    then never outlives its data on a node crash, and no part syncs another's chunks. Keys are
    zarr 3's default ``0/c/i/j/...``; chunks never written (all fill value) have no file."""
    grid, ndim = tuple(array.shards or array.chunks), len(array.shape)
    folders = set()
    for lead, ys, xs in blocks:
        ranges = []
        for axis, s in enumerate((*lead, ys, xs)):
            f = scale if axis >= ndim - 2 else 1
            ranges.append(range(s.start * f // grid[axis], -(-s.stop * f // grid[axis])))
        for index in itertools.product(*ranges):
            chunk = Path(path, "0", "c", *map(str, index))
            if chunk.is_file():
                fsync_path(chunk)
                folders.add(chunk.parent)
    for f in folders:
        fsync_path(f)


def write_marker(out: str | os.PathLike[str], stage: Stage, record: dict) -> None:
    """A part's (or the prepare stage's) marker, written atomically once its work is durable."""
    index = stage.index if stage.kind == "part" else "prepare"
    with atomic_path(marker(out, index, stage.count)) as tmp:
        tmp.write_text(json.dumps({"part": str(stage), **record}, indent=1), encoding="utf-8")


def read_markers(out: str | os.PathLike[str], count: int, suffix: str = ".json") -> list[Path]:
    """Every part's marker (or CSV), refused when one is missing (its part is not done)."""
    paths = [Path(marker(out, k, count, suffix)) for k in range(1, count + 1)]
    missing = [k for k, p in zip(range(1, count + 1), paths) if not p.is_file()]
    if missing:
        raise InputError(out, f"part(s) {', '.join(map(str, missing))} of {count} are not done "
                              f"(no {paths[missing[0] - 1].name}); run them first")
    return paths


def records(out: str | os.PathLike[str], count: int) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in read_markers(out, count)]


def concatenate(csv: str | os.PathLike[str], count: int) -> Path:
    """Gather of a scattered evaluation: the part CSVs' rows, in order, under one header (as text,
    so every number is the one the part wrote); then the parts folder is removed."""
    header, body = None, []
    for path in read_markers(csv, count, ".csv"):
        head, _, rows = path.read_text(encoding="utf-8").partition("\n")
        if header is not None and head != header:
            raise InputError(path, f"columns differ from part 1's ({head!r} vs {header!r}); rerun the parts")
        header = head
        body.append(rows)
    with atomic_path(csv) as tmp:
        tmp.write_text(f"{header}\n{''.join(body)}", encoding="utf-8")
    clear(csv)
    return Path(csv)


def clear(out: str | os.PathLike[str]) -> None:
    """Remove the parts folder of `out` (after gather, or before a fresh prepare)."""
    shutil.rmtree(folder(out), ignore_errors=True)
