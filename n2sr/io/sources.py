"""The raw files behind an ingested OME-Zarr: recorded at ingest, checked by every later step.

Ingest records each raw file's path, size, modification time and sha256. A step that reads the
ingested image first checks that the raw files still are what was ingested: a different size,
or a different modification time with a different sha256, means the source changed under a
finished ingest, and the step stops with one line (rerun ingest) instead of mixing old pixels
with new reports. Unchanged files cost one ``stat`` each; a sha256 is recomputed only when the
modification time moved. A raw file that is gone (archived, moved) is not an error: the
ingested copy is then the data of record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from n2sr.errors import InputError
from n2sr.io.images import sha256_file


def record(files: Sequence[Path], checksums: Sequence[str]) -> list[dict[str, Any]]:
    """What ingest stores under ``source_files``: one entry per raw file."""
    entries = []
    for path, sha in zip(files, checksums):
        stat = Path(path).stat()
        entries.append({"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                        "sha256": sha})
    return entries


def check(ingested: str | os.PathLike[str], attrs: dict[str, Any]) -> None:
    """Stop with one line naming the raw file when it changed since `ingested` was made from it."""
    for entry in attrs.get("source_files", ()):
        path = Path(entry["path"])
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if stat.st_size != entry["size"]:
            changed = f"its size went from {entry['size']} to {stat.st_size} bytes"
        elif stat.st_mtime_ns != entry["mtime_ns"] and sha256_file(path) != entry["sha256"]:
            changed = "its content (sha256) differs"
        else:
            continue
        raise InputError(path, f"changed after it was ingested into {os.fspath(ingested)} ({changed}); "
                               "rerun ingest for it (snakemake -R ingest, or delete that Zarr)")
