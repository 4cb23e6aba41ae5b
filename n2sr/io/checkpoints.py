"""Checkpoints: written atomically, read with ``weights_only=True``, hashed as read.

A checkpoint must be safe to open when it comes from someone else's archive, and must never
be half-written when a cluster job is killed, because a later job would trust it. So files go
through the one atomic writer (`n2sr.io.atomic`), and loading refuses anything but tensors and
plain containers. Loading returns the recorded state and configs; building the network is
the caller's (`n2sr.nn.model.from_state`), so this module needs no network code.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from n2sr.errors import InputError
from n2sr.io.atomic import atomic_path

FORMAT = "n2sr-checkpoint/1"
REQUIRED = ("method", "scale", "model_config", "normalizer", "model")


def save(path: str | os.PathLike[str], obj: dict[str, Any]) -> None:
    """Write ``obj`` to ``path`` so that readers see the old file or the new one, never a part."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **obj}, tmp)


def load(path: str | os.PathLike[str], *, require: tuple[str, ...] = REQUIRED) -> dict[str, Any]:
    """Read a checkpoint without executing any pickled code.

    The file is read once; ``"sha256"`` in the result is the hash of exactly those bytes, so a
    recorded hash always belongs to the weights that were used. `require` names the keys the
    caller needs (a resume state needs others); a missing one is an `InputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    data = path.read_bytes()
    try:
        with warnings.catch_warnings():  # e.g. torch's note on an unusual pickle protocol: not the user's business
            warnings.simplefilter("ignore")
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        text = " ".join(str(exc).split())
        # The first sentence only: torch goes on with advice that does not apply here (load the
        # file with weights_only=False, which would run its code; miniz's internals).
        first = text.split(". ")[0].rstrip(".") if text else type(exc).__name__
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            first = "it holds pickled code or objects other than tensors and plain containers; refused"
        raise InputError(path, f"not a readable n2sr checkpoint ({first})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise InputError(path, f"not an n2sr checkpoint (format {found!r}, expected {FORMAT!r})")
    if "model_config" in obj:  # written before the baselines: Noise2SR's network
        obj.setdefault("method", "n2sr")
        obj.setdefault("scale", 2)
    missing = [k for k in require if k not in obj]
    if missing:
        raise InputError(path, f"checkpoint lacks {', '.join(missing)}; is it a resume state or from another tool?")
    obj["sha256"] = hashlib.sha256(data).hexdigest()
    return obj
