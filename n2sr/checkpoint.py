"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint must be safe to open when it comes from someone else's archive, and must
never be half-written when a cluster job is killed, because a later job would trust it.
So files go to a temporary sibling and are renamed into place, and loading refuses
anything but tensors and plain containers.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import n2sr
from n2sr.model import ModelConfig, build_model
from n2sr.normalize import Normalizer

FORMAT = "n2sr-checkpoint/1"


def versions() -> dict[str, str]:
    """Package versions recorded in every output, for reproducibility."""
    return {
        "n2sr": n2sr.__version__,
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def save(path: str | os.PathLike, obj: dict[str, Any]) -> None:
    """Write ``obj`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without executing any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{path}: not a readable n2sr checkpoint ({exc})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path}: not an n2sr checkpoint (format {obj.get('format') if isinstance(obj, dict) else type(obj).__name__!r})")
    return obj


def load_model(path: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, Normalizer, dict[str, Any]]:
    """Rebuild the trained network and its normalisation from a checkpoint.

    ``ckpt["scale"]`` says which network: 2 the Noise2SR one, 1 the plain U-Net of the
    baselines (``ckpt["method"]`` names the method). Checkpoints from before the baselines
    have neither and are Noise2SR's.
    """
    ckpt = load(path)
    ckpt.setdefault("method", "n2sr")
    ckpt.setdefault("scale", 2)
    model = build_model(ModelConfig(**ckpt["model_config"]), sr=ckpt["scale"] == 2)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, Normalizer.from_dict(ckpt["normalizer"]), ckpt
