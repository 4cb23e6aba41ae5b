"""Planes into an OME-Zarr at disk speed: hashed, decoded, compressed and written by threads.

Ingest hands every output plane to `copy_planes`: a small thread pool decodes it (a TIFF page
is read under the file's lock and decoded outside it), compresses its chunks and writes them,
while `hashing` reads the source once more for its sha256 in a thread of its own. hashlib,
Blosc and file I/O release the GIL, so the threads really run at once; at most `depth` planes
are in flight, so memory stays a few planes whatever the stack's size.

`ChunkWriter` encodes and writes the chunk files itself instead of calling
``zarr.Array.__setitem__``, whose per-call round trips through zarr's event loop cost more
than the compression (``benchmarks/results/ingest.md``). It does so only for the layout it
knows, n2sr's own (bytes + Blosc codecs, plane chunks, fill value 0, empty chunks not
stored; whole planes per shard when sharded, the index at the end with its crc32c), and then
writes the very bytes zarr would (``tests/test_ingest_stream.py``); any other layout is
written through zarr. Shards matter: one file per plane made the kernel's work of creating,
writing and syncing files ingest's largest cost after hashing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import google_crc32c
import numpy as np
import zarr
from numcodecs import Blosc

from n2sr.cpus import available_cpus
from n2sr.io.atomic import fsync_path, sync_tree
from n2sr.io.images import sha256_file

_SHUFFLE = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}
Plane = tuple[tuple[int, ...], Callable[[], np.ndarray]]  # (t, c, z) index and a function reading it


class ChunkWriter:
    """Writes whole ``(y, x)`` planes into array ``0`` of the OME-Zarr at `path`, from any thread.

    A sharded array (`omezarr.plane_shards`: runs of whole planes) gets each shard file once,
    whole, from the thread that encodes its last plane; a shard's other planes wait encoded in
    memory. So writers never read back a shard, and no two threads write one file.
    """

    def __init__(self, path: str | os.PathLike[str], array: zarr.Array) -> None:
        self.array = array
        self.root = Path(path, array.path)
        self._codec, self._dtype = _known_encoding(array)
        self._shards = array.shards
        self._open: dict[tuple[int, ...], dict[tuple[int, ...], bytes | None]] = {}
        self._lock = threading.Lock()

    @property
    def direct(self) -> bool:
        """True when chunks are encoded and written here, False when through zarr."""
        return self._codec is not None

    def write(self, index: tuple[int, ...], plane: np.ndarray) -> None:
        """Store `plane` at ``array[index]`` (`index`: t, c, z), chunk by chunk."""
        if self._codec is None:
            if self._shards is None:
                self.array[index] = plane
            else:  # zarr rewrites the whole shard for one plane: one writer at a time
                with self._lock:
                    self.array[index] = plane
            return
        if self._shards is not None:
            self._add_to_shard(index, self._encode(plane))
            return
        cy, cx = self.array.chunks[-2:]
        for y in range(0, plane.shape[0], cy):
            for x in range(0, plane.shape[1], cx):
                file = self.root / self.array.metadata.encode_chunk_key((*index, y // cy, x // cx))
                data = self._encode(plane[y:y + cy, x:x + cx])
                if data is not None:
                    put(file, data)
                else:  # all fill value: zarr stores no chunk (and removes an old one)
                    file.unlink(missing_ok=True)

    def _encode(self, tile: np.ndarray) -> bytes | None:
        """One chunk's bytes as zarr encodes them; None for an all-fill-value chunk (zarr stores none)."""
        cy, cx = self.array.chunks[-2:]
        if tile.shape != (cy, cx):  # zarr stores an edge chunk whole, padded with the fill value
            padded = np.zeros((cy, cx), self._dtype)
            padded[:tile.shape[0], :tile.shape[1]] = tile
            tile = padded
        data = np.ascontiguousarray(tile, dtype=self._dtype)
        return self._codec.encode(data) if data.view(np.uint8).any() else None

    def shard_of(self, index: tuple[int, ...]) -> tuple[int, ...]:
        """Shard grid coordinates (``t c z`` plus ``0, 0``) of plane `index`."""
        return (*(i // s for i, s in zip(index, self._shards[:-2])), 0, 0)

    def shard_planes(self, shard: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The array's planes in `shard`, in ``t c z`` order (fewer at the array's end)."""
        ranges = [range(g * s, min((g + 1) * s, n)) for g, s, n in zip(shard[:3], self._shards[:3], self.array.shape)]
        return [tuple(tcz) for tcz in itertools.product(*ranges)]

    def _add_to_shard(self, index: tuple[int, ...], data: bytes | None) -> None:
        shard = self.shard_of(index)
        with self._lock:
            chunks = self._open.setdefault(shard, {})
            chunks[index] = data
            if len(chunks) < len(self.shard_planes(shard)):
                return
            del self._open[shard]
        file = self.root / self.array.metadata.encode_chunk_key(shard)
        encoded = _shard_bytes(chunks, self._shards, shard)
        if encoded is None:  # every plane all fill value: zarr stores no shard
            file.unlink(missing_ok=True)
        else:
            put(file, encoded)

    def unfinished(self) -> list[tuple[int, ...]]:
        """Shards some but not all of whose planes were written (not on disk): none after a whole copy."""
        with self._lock:
            return sorted(self._open)


def _shard_bytes(chunks: dict[tuple[int, ...], bytes | None], shards: tuple[int, ...],
                 shard: tuple[int, ...]) -> bytes | None:
    """A zarr v3 ``sharding_indexed`` shard of one chunk per plane: the chunks in order (the Morton
    order zarr uses is plain order along the one sharded axis), then the index of (offset, nbytes)
    uint64 pairs, all-ones for a missing chunk, little-endian, and its crc32c."""
    index = np.full((*shards[:3], 1, 1, 2), np.iinfo(np.uint64).max, dtype="<u8")
    parts, offset = [], 0
    for tcz in sorted(chunks):
        data = chunks[tcz]
        if data is None:
            continue
        local = tuple(i - g * s for i, g, s in zip(tcz, shard, shards))
        index[(*local, 0, 0)] = (offset, len(data))
        parts.append(data)
        offset += len(data)
    if not parts:
        return None
    raw = index.tobytes()
    return b"".join([*parts, raw, np.uint32(google_crc32c.value(raw)).tobytes()])


def _known_encoding(array: zarr.Array) -> tuple[Blosc | None, np.dtype]:
    """The Blosc compressor and stored dtype (with byte order) of n2sr's layout; None for any other."""
    meta = array.metadata.to_dict()
    codecs = meta.get("codecs", [])
    if array.shards is not None:  # n2sr's shards: whole planes, the index at the end, checksummed
        config = codecs[0].get("configuration", {}) if len(codecs) == 1 else {}
        if (codecs[0].get("name") != "sharding_indexed" or config.get("index_location") != "end"
                or [c.get("name") for c in config.get("index_codecs", [])] != ["bytes", "crc32c"]
                or (config["index_codecs"][0].get("configuration") or {}).get("endian", "little") != "little"
                or not tuple(array.chunks[-2:]) == tuple(array.shape[-2:]) == tuple(array.shards[-2:])
                or sum(s > 1 for s in array.shards[:-2]) > 1):
            return None, array.dtype
        codecs = config.get("codecs", [])
    if (meta.get("zarr_format") != 3 or [c.get("name") for c in codecs] != ["bytes", "blosc"]
            or meta["chunk_grid"]["name"] != "regular" or meta["chunk_key_encoding"]["name"] != "default"
            or tuple(array.chunks[:-2]) != (1,) * (array.ndim - 2) or array.ndim < 3
            or zarr.config.get("array.write_empty_chunks") or array.fill_value != 0):
        return None, array.dtype
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    blosc = codecs[1]["configuration"]
    codec = Blosc.from_config({"cname": blosc["cname"], "clevel": blosc["clevel"], "shuffle": _SHUFFLE[blosc["shuffle"]],
                               "blocksize": blosc["blocksize"], "typesize": blosc["typesize"]})
    return codec, np.dtype(array.dtype).newbyteorder("<" if endian == "little" else ">")


def put(file: Path, data: Any) -> None:
    """Write one chunk file and flush it to disk (from the writing thread, overlapped with the others)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def sync_planes(writer: ChunkWriter, numbers: range) -> None:
    """fsync the chunk (shard) files and folders of the planes numbered `numbers` (``t c z`` order) and their
    parent folders: a part's marker then never outlives its data (`n2sr.io.parts`)."""
    array, folders = writer.array, set()
    planes = {tuple(int(i) for i in np.unravel_index(number, array.shape[:-2])) for number in numbers}
    keys = {writer.shard_of(tcz) for tcz in planes} if array.shards else {(*tcz, 0, 0) for tcz in planes}
    for key in sorted(keys):  # a plane's (shard's) folder holds its chunk files
        plane = (writer.root / array.metadata.encode_chunk_key(key)).parent.parent
        if plane.is_dir():
            sync_tree(plane)
            folders.update(p for p in plane.parents if p.is_relative_to(writer.root))
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        fsync_path(folder)


def copy_planes(planes: Iterable[Plane], writer: ChunkWriter, *, workers: int | None = None,
                depth: int | None = None) -> None:
    """Read and write `planes` on `workers` threads (default: one per CPU we may use; two per CPU
    were no faster here), at most `depth` (default 2 per thread) in flight, so memory is a few
    planes per thread (plus, for a sharded array, the compressed planes of the shards not yet
    complete: one or two shards). The first failure is raised once every started plane has stopped, so
    nothing writes into the output after this returns or raises."""
    workers = workers or available_cpus()
    depth = depth or 2 * workers
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="n2sr-copy") as pool:
        try:
            for index, read in planes:
                while len(pending) >= depth:
                    pending.popleft().result()
                pending.append(pool.submit(_copy_one, writer, index, read))
            while pending:
                pending.popleft().result()
            if writer.unfinished():  # the caller's runs of planes must be whole shards (n2sr.io.parts)
                raise ValueError(f"{writer.root}: shards {writer.unfinished()} got only some of their planes; "
                                 "they were not written")
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _copy_one(writer: ChunkWriter, index: tuple[int, ...], read: Callable[[], np.ndarray]) -> None:
    writer.write(index, read())


@contextlib.contextmanager
def hashing(path: str | os.PathLike[str]) -> Iterator[Callable[[], str]]:
    """sha256 of `path` computed in a thread while the block runs; call what it yields for the hex
    digest. If the block fails, the thread stops at its next read."""
    stop = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="n2sr-sha256") as pool:
        future = pool.submit(sha256_file, path, stop=stop)  # 1 MiB reads: hashlib drops the GIL
        try:
            yield future.result
        finally:
            stop.set()
