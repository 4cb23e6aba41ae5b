"""Step `adopt`: reuse a model trained before (an earlier run, another project) instead of training.

A lab that froze its models, or shares them between projects, names a checkpoint per
configuration (config ``models``). Before any image goes through it, the checkpoint is opened
safely (``weights_only``) and checked against what this run would have trained: the method, its
output scale, the normalisation mode, the n2sr version that wrote it, and that its weights fit
the recorded network. A mismatch is one line naming the file and the problem. The record of an
accepted checkpoint (``adopted.json``: path, sha256, what trained it) goes into the run's models
folder; the file itself stays where it is, untouched, and the denoise jobs read it from there
(each records the sha256 of the bytes it used).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import n2sr
from n2sr.errors import InputError
from n2sr.io import checkpoints
from n2sr.io.atomic import atomic_path
from n2sr.io.guard import check_outputs
from n2sr.io.provenance import versions
from n2sr.nn.model import from_state

SCALES = {"n2sr": 2, "n2v": 1, "n2s": 1, "n2n": 1}  # output scale of each trained method's network


def adopt(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *, method: str = "n2sr",
          normalization: str | None = None) -> dict:
    """Check `checkpoint` as this run's `method` model and write its record to `out` (JSON).

    `normalization`: the run's ``train.normalization``, which the checkpoint must have been
    trained with (None: not checked). Returns the record.
    """
    source, out = Path(checkpoint), Path(out)
    check_outputs([source], [out])
    ckpt = checkpoints.load(source)
    problem = mismatch(ckpt, method, normalization)
    if problem:
        raise InputError(source, problem)
    try:
        from_state(ckpt["model_config"], ckpt["scale"], ckpt["model"])
    except (TypeError, ValueError) as exc:
        raise InputError(source, f"damaged or foreign checkpoint: {exc}") from None
    record = {
        "source": str(source.resolve()), "sha256": ckpt["sha256"], "method": ckpt["method"],
        "scale": ckpt["scale"], "normalizer": ckpt["normalizer"], "stride": ckpt.get("stride", 2),
        "whiten": ckpt.get("whiten"),
        "trained_with": ckpt.get("versions", {}), "train_config": ckpt.get("train_config"),
        "model_config": ckpt["model_config"], "steps": ckpt.get("steps"), "best_val": ckpt.get("best_val"),
        "checked_with": versions(),
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return record


def mismatch(ckpt: dict, method: str, normalization: str | None) -> str | None:
    """Why `ckpt` cannot serve as this run's `method` model, or None."""
    if ckpt["method"] != method:
        return f"is a {ckpt['method']} model; this configuration's {method} model must be one (or retrain it)"
    if ckpt["scale"] != SCALES.get(method, ckpt["scale"]):
        return f"has output scale {ckpt['scale']}, a {method} network has {SCALES[method]}"
    mode = (ckpt.get("normalizer") or {}).get("mode")
    if normalization is not None and mode != normalization:
        return (f"was trained with normalization {mode}; this run's train.normalization is {normalization}: "
                "set it to match or retrain")
    written = (ckpt.get("versions") or {}).get("n2sr", "")
    if written and _release(written) > _release(n2sr.__version__):
        return f"was written by n2sr {written}, newer than this n2sr {n2sr.__version__}: upgrade n2sr to use it"
    return None


def _release(version: str) -> tuple[int, ...]:
    """``0.1.0`` -> (0, 1, 0); local or pre-release suffixes ignored."""
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)
