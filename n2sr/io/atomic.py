"""The one way outputs are written: to a temporary sibling, synced, then renamed into place.

An interrupted job (killed, out of disk, exception) then never leaves a half-written output
that Snakemake or a later step would take as complete, and a crash right after the rename
cannot lose the data the name points to (file and folder are fsynced first).

Temporary names are ``.<name>.tmp-<host>-<pid>-<random>``: unique across the nodes of a
cluster sharing one output folder, so two writers of sibling outputs never touch each other's
files. A job killed outright (SIGKILL, node failure) cannot clean up; the next writer of the
*same* output removes such leftovers when they are provably dead (same host, process gone)
or older than `STALE_SECONDS`. Nothing else in the folder is touched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

STALE_SECONDS = 24 * 3600.0  # a temporary of another host this old belongs to no live writer
_KINDS = ("tmp", "old")
SYNC_THREADS = 8  # fsyncs of one tree in flight at once (`sync_tree`)


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


def sibling(path: Path, kind: str) -> Path:
    """A fresh temporary name beside `path` (`kind` "tmp" for the new content, "old" for the one it replaces)."""
    return path.with_name(f".{path.name}.{kind}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write (a file or a folder); on success move it onto `path`.

    A folder output (Zarr) that already exists is moved aside and deleted after the new one is
    in place, since `os.replace` cannot replace a non-empty folder: that swap is two renames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    tmp = sibling(path, "tmp")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written for {path}")
        sync_tree(tmp)
        if tmp.is_dir() or (path.is_dir() and not path.is_symlink()):
            old = sibling(path, "old")
            if path.exists() or path.is_symlink():
                os.replace(path, old)
            os.replace(tmp, path)
            fsync_path(path.parent)
            remove(old)
        else:
            os.replace(tmp, path)
            fsync_path(path.parent)
    except BaseException:
        remove(tmp)
        raise


def sweep_stale(path: Path, *, now: float | None = None) -> list[Path]:
    """Remove temporaries of `path` left by dead writers; return what was removed."""
    now = time.time() if now is None else now
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        owner = _owner(entry.name, path.name)
        if owner is None:
            continue
        host, pid = owner
        try:
            age = now - entry.lstat().st_mtime
        except FileNotFoundError:
            continue
        dead = host == _host() and pid != os.getpid() and not _alive(pid)
        if dead or age > STALE_SECONDS:
            remove(entry)
            removed.append(entry)
    return removed


def _owner(name: str, target: str) -> tuple[str, int] | None:
    """(host, pid) of a temporary name of `target`, or None when `name` is not one."""
    for kind in _KINDS:
        prefix = f".{target}.{kind}-"
        if name.startswith(prefix):
            host, _, rest = name[len(prefix):].rpartition("-")[0].rpartition("-")
            try:
                return host, int(rest)
            except ValueError:
                return None
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sync_tree(path: Path) -> None:
    """fsync a file, or every file and folder under a folder, so a rename publishes durable data.

    A tree's fsyncs run `SYNC_THREADS` at a time: each waits on the disk, not the CPU, and one
    by one the ~2,600 of a 512-plane OME-Zarr took 0.6-2.8 s here, as long as ingesting it
    (``benchmarks/results/ingest.md``); 8 at once took 0.16 s."""
    if path.is_file():
        fsync_path(path)
        return
    pending: deque[Future] = deque()  # at most 4 per thread: memory does not grow with the tree
    with ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="n2sr-fsync") as pool:
        for root, _, files in os.walk(path):
            for entry in [*(Path(root, name) for name in files), Path(root)]:
                while len(pending) >= 4 * SYNC_THREADS:
                    pending.popleft().result()  # the first failure is raised once every fsync begun is over
                pending.append(pool.submit(fsync_path, entry))
        while pending:
            pending.popleft().result()


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entries to disk (a folder: so a rename in it survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    """Delete a file, link or folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
