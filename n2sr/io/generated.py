"""Generated folders: written file by file beside whatever else is there, never deleted whole.

A step that generates a folder of inputs (`synth`, `add_noise`) may be pointed at a folder that
holds the user's own files. So the folder is never replaced or emptied: the step writes only
the files it names, each through the atomic writer, and the pipeline depends on the folder's
``manifest.csv``, written last, as its completeness marker (Snakemake deletes a ``directory()``
output before its job runs; a file output it deletes alone).

Snakemake also deletes that manifest before it reruns the job (``--forcerun``, ``-R``,
``--forceall``), so ownership is recorded in a second, hidden file, ``.n2sr-files``: the step
that wrote the folder and every file it wrote there. A rerun over the step's own earlier
output replaces (or removes, when no longer generated) only the files listed there; a
non-empty folder without such a record is refused, and so is a file the step would write
that exists but is not in its record. `remove_generated` (``make clean``) deletes the listed
files and nothing else.

    python -m n2sr.io.generated remove DIR...    delete what n2sr generated in and under each DIR
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd

from n2sr.errors import InputError
from n2sr.io.atomic import atomic_path

MANIFEST = "manifest.csv"
RECORD = ".n2sr-files"
_HEADER = "# n2sr {owner}: the files it generated in this folder, one per line (do not edit)"


def owned_files(root: Path, owner: str) -> set[str] | None:
    """The files `owner` recorded as its own in `root`; empty for a missing or empty folder,
    None for a non-empty folder that `owner` did not write."""
    record = root / RECORD
    if record.is_file():
        lines = record.read_text(encoding="utf-8").splitlines()
        if not lines or lines[0] != _HEADER.format(owner=owner):
            return None
        return {line for line in lines[1:] if line and _plain(line)}
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return set()
    return None


def _plain(rel: str) -> bool:
    """A relative path inside the folder (no absolute path, no '..')."""
    parts = Path(rel).parts
    return bool(parts) and not Path(rel).is_absolute() and ".." not in parts


class GeneratedFolder:
    """What a generating step sees inside `generated_folder`: where to write each file."""

    def __init__(self, root: Path, files: Iterable[str]) -> None:
        self.root = root
        self.files = set(files)
        self.manifest: pd.DataFrame | None = None

    def path(self, rel: str | os.PathLike[str]) -> Path:
        """Where to write the file `rel` (one of the files announced); write it through atomic_path."""
        rel = Path(rel).as_posix()
        if rel not in self.files:
            raise ValueError(f"{rel}: not among the files announced for {self.root}")
        return self.root / rel


def check_folder(root: str | os.PathLike[str], files: Iterable[str], *, owner: str,
                 what: str = "a generated folder") -> set[str]:
    """The files `owner` wrote in `root` before; `InputError` if it may not write `files` there:
    `root` is a non-empty folder it did not write, or one of `files` exists and is not its own."""
    root = Path(root)
    files = sorted({Path(f).as_posix() for f in files})
    if MANIFEST in files or RECORD in files or not all(map(_plain, files)):
        raise ValueError(f"{root}: bad file list for a generated folder")
    if root.exists() and not root.is_dir():
        raise InputError(root, f"exists and is not a folder; refusing to replace it with {what}")
    old = owned_files(root, owner)
    if old is None:
        raise InputError(root, f"exists and is not {what} (not empty, and no {RECORD} record of n2sr {owner}); "
                               "refusing to write into it: choose a new or empty folder")
    for rel in files:
        path = root / rel
        if not _reached_directly(root, rel):
            raise InputError(path, "lies behind a symlinked folder, which may lead to someone else's files; "
                                   f"refusing to write there (replace the link in {root} by a folder)")
        if rel not in old and (path.exists() or path.is_symlink()):
            raise InputError(path, f"exists and was not written by n2sr {owner}; refusing to replace it "
                                   "(move it out of the folder)")
    return old


@contextlib.contextmanager
def generated_folder(root: str | os.PathLike[str], files: Iterable[str], *, owner: str,
                     what: str = "a generated folder") -> Iterator[GeneratedFolder]:
    """Write the announced `files` into `root` beside anything else there; ``manifest.csv`` last.

    Refuses (an `InputError` naming the folder, before anything is written) a non-empty folder
    that `owner` did not write, and a file it would write that exists but is not its own. The
    body writes each file to ``folder.path(rel)`` and sets ``folder.manifest``; on success the
    step's files of an earlier run that are no longer generated are removed, the record is
    updated and the manifest is written. Interrupted, the folder has no manifest (incomplete)
    and the record lists every file that may be the step's, so the next run can replace them.
    """
    root = Path(root)
    files = sorted({Path(f).as_posix() for f in files})
    old = check_folder(root, files, owner=owner, what=what)
    root.mkdir(parents=True, exist_ok=True)
    _remove_file(root / MANIFEST)  # incomplete from here on
    _write_record(root, owner, old | set(files))
    folder = GeneratedFolder(root, files)
    yield folder
    if folder.manifest is None:
        raise ValueError(f"{root}: the step set no manifest")
    for rel in sorted(old - set(files) - {MANIFEST}):
        if _reached_directly(root, rel):
            _remove_file(root / rel)
            _prune(root, (root / rel).parent)
    _write_record(root, owner, set(files) | {MANIFEST})
    with atomic_path(root / MANIFEST) as tmp:
        folder.manifest.to_csv(tmp, index=False)


def _write_record(root: Path, owner: str, files: Iterable[str]) -> None:
    with atomic_path(root / RECORD) as tmp:
        tmp.write_text("\n".join([_HEADER.format(owner=owner), *sorted(files)]) + "\n", encoding="utf-8")


def _remove_file(path: Path) -> None:
    """Delete a file or link; never a folder (a folder at a recorded path is not ours)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)


def _reached_directly(root: Path, rel: str) -> bool:
    """Whether `root/rel` is reached without passing a symlinked folder (which could lead to
    someone else's files): only such paths are removed."""
    parent = Path(rel).parent
    return Path(os.path.realpath(root / parent)) == Path(os.path.realpath(root)) / parent


def _prune(root: Path, folder: Path) -> None:
    """Remove `folder` and its parents up to (not including) `root` while they are empty."""
    root = root.resolve()
    folder = folder.resolve()
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): someone else's files are in it
            return
        folder = folder.parent


def remove_generated(root: str | os.PathLike[str]) -> list[Path]:
    """Delete the files n2sr recorded as generated in `root` (and folders they leave empty); return them.

    A folder without a record (`RECORD`) is left alone entirely, whatever its name.
    """
    root = Path(root)
    record = root / RECORD
    if not record.is_file() or root.is_symlink():
        return []
    lines = record.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].startswith("# n2sr "):
        return []
    removed = []
    for rel in sorted({line for line in lines[1:] if line and _plain(line)}):
        path = root / rel
        if _reached_directly(root, rel) and (path.is_symlink() or path.is_file()):
            _remove_file(path)
            removed.append(path)
            _prune(root, path.parent)
    _remove_file(record)
    removed.append(record)
    with contextlib.suppress(OSError):
        root.rmdir()  # only if nothing else is left in it
    return removed


def find_generated(top: str | os.PathLike[str]) -> list[Path]:
    """Folders under `top` (and `top` itself) holding a record of generated files. Hidden folders
    and symlinked folders are not entered."""
    found = []
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if RECORD in files:
            found.append(Path(folder))
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "remove":
        print("usage: python -m n2sr.io.generated remove DIR...   (deletes only the files n2sr recorded as "
              f"generated, in {RECORD})", file=sys.stderr)
        return 2
    for top in argv[1:]:
        for folder in find_generated(top):
            removed = remove_generated(folder)
            print(f"{folder}: removed the {max(len(removed) - 1, 0)} files n2sr generated there")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
