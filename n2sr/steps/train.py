"""Step `train`: noisy images in, a checkpoint and its training curve out.

The loop itself is `n2sr.nn.training.fit` (no files); this step reads the planes, keeps the
resume state in ``<out>.state`` (written every ``checkpoint_every`` iterations, so a killed job
continues with ``resume=True``), and writes the best weights with everything inference and
provenance need. With ``init`` set to a checkpoint, training starts from its weights (a warm
start: fine-tuning a model trained before on new data); its path and hash are recorded.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from n2sr.config import TrainConfig
from n2sr.errors import InputError
from n2sr.io import checkpoints
from n2sr.io.atomic import atomic_path
from n2sr.io.guard import check_outputs
from n2sr.io.planes import select
from n2sr.io.provenance import versions
from n2sr.nn.device import pick_device, set_threads
from n2sr.nn.objectives import objective
from n2sr.nn.training import TrainResult, fit

log = logging.getLogger(__name__)
CURVE_COLUMNS = ["step", "train_loss", "val_loss", "seconds", "it_per_s"]


def train(images: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], cfg: TrainConfig = TrainConfig(), *,
          method: str = "n2sr", settings: Any = None, captures: Sequence[int] | None = None,
          curve: str | os.PathLike[str] | None = None, plot: str | os.PathLike[str] | None = None,
          resume: bool = False) -> TrainResult:
    """Train one `method` model on every selected plane of `images`.

    ``n2n`` trains on pairs of independent captures of one field of view: consecutive
    selected captures of each image, ``(c0, c1), (c1, c2), ...``.
    """
    check_outputs(images, [out, state_path(Path(out)), curve, plot])
    paired = objective(method, settings).captures == 2
    patch_size = cfg.resolved(pick_device(cfg.device).type == "cuda").patch_size
    planes, sources = [], []
    for path in images:
        selection = select(path, captures)
        stack = selection.read()
        stack = stack.reshape(-1, *stack.shape[-2:])
        if min(stack.shape[-2:]) < patch_size:
            raise InputError(path, f"plane of {stack.shape[-2]}x{stack.shape[-1]} pixels is smaller than the "
                                   f"training patch ({patch_size}); lower patch_size")
        ids = selection.captures if len(selection.captures) == len(stack) else list(range(len(stack)))
        if paired:
            planes += [stack[i:i + 2] for i in range(len(stack) - 1)]
            sources += [f"{path}[{a},{b}]" for a, b in zip(ids, ids[1:])]
        else:
            planes += list(stack)
            sources += [f"{path}[{i}]" for i in ids]
    if paired and not planes:
        raise InputError(images[0], "n2n needs at least 2 captures of one field of view to pair; "
                                    "every training image has 1 (drop n2n from methods or add captures)")
    result = train_planes(planes, out, cfg, method=method, settings=settings, resume=resume, sources=sources)
    write_curve(result.curve, curve, plot)
    log.info("trained %d iterations in %.0f s; best validation loss %.5g at iteration %d -> %s",
             result.steps, result.seconds, result.best_val, result.best_step, out)
    return result


def train_planes(planes: Sequence[np.ndarray], out: str | os.PathLike[str], cfg: TrainConfig = TrainConfig(), *,
                 method: str = "n2sr", settings: Any = None, resume: bool = False, sources: Sequence[str] = (),
                 progress: bool = True) -> TrainResult:
    """Train on planes in memory and write the checkpoint `out` (and its resume state)."""
    set_threads()
    out = Path(out)
    state = state_path(out)
    previous = None
    if resume and state.is_file():
        try:
            previous = checkpoints.load(state, require=("fingerprint", "step"))
        except InputError as exc:
            log.warning("%s; starting from scratch", exc)
    obj = objective(method, settings)
    init = None if cfg.init == "scratch" else load_init(cfg, method, obj.scale)
    result = fit(planes, cfg, method=method, settings=obj.settings, resume=previous,
                 on_state=lambda s: checkpoints.save(state, s), sources=sources, progress=progress,
                 init=None if init is None else (init["sha256"], init["model"]))
    checkpoints.save(out, {
        "method": method, "scale": result.scale, "model_config": asdict(cfg.model),
        "train_config": json.loads(json.dumps(asdict(result.config), default=str)),
        "recipe": result.config.recipe,
        "init": None if init is None else {"path": str(cfg.init), "sha256": init["sha256"]},
        "method_config": asdict(obj.settings) if obj.settings is not None else None,
        "normalizer": result.normalizer.to_dict(), "precision": result.precision, "device": result.device,
        "sources": list(sources), "versions": versions(), "model": result.best_state, "step": result.best_step,
        "stride": result.stride["stride"], "whiten": result.stride["whiten"], "stride_choice": result.stride,
        "steps": result.steps, "best_val": result.best_val, "curve": result.curve, "seconds": result.seconds,
    })
    return result


def load_init(cfg: TrainConfig, method: str, scale: int) -> dict[str, Any]:
    """The checkpoint a warm start begins from, refused unless its network is the one `cfg`
    and `method` build (same layers and shapes), so its weights can be loaded one for one."""
    ckpt = checkpoints.load(cfg.init)
    ours = {"method": method, "scale": scale, "model_config": asdict(cfg.model)}
    theirs = {k: ckpt[k] for k in ours}
    if theirs != ours:
        differ = ", ".join(f"{k}: {theirs[k]} (this run: {ours[k]})" for k in ours if theirs[k] != ours[k])
        raise InputError(cfg.init, f"init checkpoint has another architecture ({differ}); "
                                   "train with its settings or init scratch")
    return ckpt


def state_path(out: Path) -> Path:
    """Where the resume state of checkpoint `out` lives."""
    return out.with_name(out.name + ".state")


def write_curve(curve: Sequence[dict], csv_path: str | os.PathLike[str] | None,
                png_path: str | os.PathLike[str] | None) -> None:
    """Training curve as CSV and PNG (both written atomically)."""
    frame = pd.DataFrame(list(curve), columns=CURVE_COLUMNS)
    if csv_path:
        with atomic_path(csv_path) as tmp:
            frame.to_csv(tmp, index=False)
    if png_path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(frame["step"], frame["train_loss"], label="train (masked MSE)")
        if frame["val_loss"].notna().any():
            ax.plot(frame["step"], frame["val_loss"], label="validation (held-out, fixed masks)")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss (normalised units)")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        with atomic_path(png_path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
