"""An output is never an input, nor inside one, nor around one: checked on resolved paths.

Outputs are written to a temporary sibling and renamed over the old path (`n2sr.io.atomic`),
and a folder output (Zarr) is replaced whole. So ``n2sr denoise m.pt a.zarr a.zarr`` would
replace its own input, and an output folder holding an input would delete it. Steps that
write outputs computed from inputs call `check_outputs` first, before reading anything.
Paths are compared after resolving symlinks (also of a parent folder), so a link cannot
smuggle an input in as an output.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from n2sr.errors import InputError

PathLike = str | os.PathLike[str]


def resolved(path: PathLike) -> Path:
    """`path` made absolute with every symlink resolved, as far as it exists (a loop stays as it is)."""
    try:
        return Path(os.path.realpath(path))
    except (OSError, RuntimeError):  # a symlink loop, on Pythons that raise for it
        return Path(os.path.abspath(path))


def _contains(outer: Path, inner: Path) -> bool:
    return outer == inner or outer in inner.parents


def check_outputs(inputs: Iterable[PathLike | None], outputs: Iterable[PathLike | None]) -> None:
    """Raise `InputError` (naming the output) when an output is an input, lies inside one or
    holds one, or when two outputs are one path. None entries (options not given) are skipped."""
    ins = [(Path(p), resolved(p)) for p in inputs if p is not None]
    outs = [(Path(p), resolved(p)) for p in outputs if p is not None]
    for i, (out, real_out) in enumerate(outs):
        for src, real_src in ins:
            if real_out == real_src:
                raise InputError(out, f"is the input {src} itself; write the output to another path")
            if _contains(real_src, real_out):
                raise InputError(out, f"lies inside the input {src}; write the output elsewhere")
            if _contains(real_out, real_src):
                raise InputError(out, f"holds the input {src}, which writing it would delete; "
                                      "write the output elsewhere")
        for other, real_other in outs[:i]:
            if _contains(real_other, real_out) or _contains(real_out, real_other):
                raise InputError(out, f"is the same path as the output {other} or overlaps it; "
                                      "give each output its own path")
