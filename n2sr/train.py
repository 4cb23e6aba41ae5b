"""Self-supervised training of Noise2SR and the learned baselines (paper Sec. 2.3, authors' defaults).

One loop for every learned method: what differs (input, target, loss mask, network) is the
method's `n2sr.objectives.Objective`; crops, validation, checkpoints, exact resume,
normalisation and precision are shared, so the baselines get exactly Noise2SR's treatment.

Each iteration draws random crops (default 128x128, batch 16), sub-samples them to the
half-size input ``y_J`` and fits the 2x output to the complement pixels ``y_Jc`` with Adam
(lr 1e-4). Held-out noisy patches, scored with the same self-supervised loss and fixed
masks, choose the checkpoint: the complement loss equals the supervised loss plus the
noise variance (Theorem 1), so its minimum is the best model without any clean image.

A run writes a resume state every ``checkpoint_every`` iterations (atomically); with
``resume=True`` a killed run continues from it and, with the same seed, ends exactly where
an uninterrupted run would, because the crop and mask generators are part of the state.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from n2sr import checkpoint
from n2sr.blindspot import N2S_GRID, N2V_BOX, N2V_RADIUS
from n2sr.device import Precision, autocast, pick_device, resolve_precision
from n2sr.model import ModelConfig, build_model
from n2sr.normalize import Normalizer
from n2sr.objectives import Objective, method_settings, objective
from n2sr.subsample import complement_mse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters; names equal the workflow config keys and CLI options."""

    iterations: int = 2000
    minutes: float | None = None
    batch_size: int = 16
    patch_size: int = 128
    lr: float = 1e-4
    seed: int = 0
    device: str = "auto"
    precision: Precision = "auto"
    augment: bool = False
    normalization: str = "range"
    val_fraction: float = 0.1
    val_every: int = 100
    val_patches: int = 32
    checkpoint_every: int = 100
    n2v_box: int = N2V_BOX
    n2v_radius: int = N2V_RADIUS
    n2s_grid: int = N2S_GRID
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if self.patch_size < 4 or self.patch_size % 2:
            raise ValueError(f"patch_size must be an even number >= 4, got {self.patch_size}")
        if self.iterations < 1 or self.batch_size < 1 or self.val_every < 1 or self.checkpoint_every < 1:
            raise ValueError("iterations, batch_size, val_every and checkpoint_every must be >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        if self.n2v_radius < 1:
            raise ValueError(f"n2v_radius must be >= 1 (a blind spot needs neighbours to copy), got {self.n2v_radius}")
        if self.n2v_box <= self.n2v_radius + 1:
            raise ValueError(f"n2v_box must exceed n2v_radius + 1 = {self.n2v_radius + 1} so a replacement never "
                             f"copies another blind spot, got {self.n2v_box}")
        if self.n2s_grid < 3:
            raise ValueError(f"n2s_grid must be >= 3 so masked pixels have unmasked neighbours, got {self.n2s_grid}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From a recorded ``train_config``; keys added since it was written take their defaults."""
        d = dict(d)
        model = d.pop("model", {})
        return cls(**d, model=model if isinstance(model, ModelConfig) else ModelConfig(**model))


@dataclass
class TrainResult:
    best_step: int
    best_val: float
    steps: int
    curve: list[dict[str, float]]
    seconds: float


def split_validation(planes: Sequence[np.ndarray], cfg: TrainConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hold out whole planes when there are enough, else a bottom strip of each plane.

    Planes are ``(Y, X)`` or ``(captures, Y, X)`` (Noise2Noise pairs); strips are cut on Y.

    Held-out pixels never enter a training crop, so the validation loss rises when the
    network starts to memorise noise instead of signal.
    """
    if cfg.val_fraction == 0:
        return list(planes), []
    n_val = int(round(cfg.val_fraction * len(planes)))
    if n_val >= 1 and len(planes) - n_val >= 1:
        return list(planes[:-n_val]), list(planes[-n_val:])
    train, val = [], []
    for p in planes:
        strip = max(cfg.patch_size, math.ceil(cfg.val_fraction * p.shape[-2]))
        if p.shape[-2] - strip < cfg.patch_size:
            return list(planes), []
        train.append(p[..., :-strip, :])
        val.append(p[..., -strip:, :])
    return train, val


def _validation_batches(val: Sequence[np.ndarray], cfg: TrainConfig, device: torch.device,
                        obj: Objective) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Fixed patches and fixed masks, so successive validation losses are comparable.

    `val` holds ``(captures, Y, X)`` arrays; the examples are ``obj``'s (input, target, mask).
    """
    p = cfg.patch_size
    patches = []
    for plane in val:
        for y in range(0, plane.shape[-2] - p + 1, p):
            for x in range(0, plane.shape[-1] - p + 1, p):
                patches.append(plane[:, y : y + p, x : x + p])
    if not patches:
        return []
    rng = np.random.default_rng(cfg.seed + 1)
    chosen = rng.permutation(len(patches))[: cfg.val_patches]
    stack = torch.from_numpy(np.stack([patches[i] for i in sorted(chosen)])).to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    return [obj.make(chunk, gen) for chunk in stack.split(cfg.batch_size)]


def _sample_batch(planes: Sequence[torch.Tensor], cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random crops (with optional flips / 90-degree rotations) of ``(C, Y, X)`` planes: (B, C, P, P)."""
    p = cfg.patch_size
    idx = torch.randint(len(planes), (cfg.batch_size,), generator=gen).tolist()
    crops = []
    for i in idx:
        plane = planes[i]
        y = int(torch.randint(plane.shape[1] - p + 1, (1,), generator=gen))
        x = int(torch.randint(plane.shape[2] - p + 1, (1,), generator=gen))
        crop = plane[:, y : y + p, x : x + p]
        if cfg.augment:
            k, flip = torch.randint(4, (2,), generator=gen).tolist()
            crop = torch.rot90(crop, k, (1, 2))
            if flip % 2:
                crop = torch.flip(crop, (2,))
        crops.append(crop)
    return torch.stack(crops)


def _fingerprint(planes: Sequence[np.ndarray], cfg: TrainConfig, method: str) -> str:
    """Identifies the data, method and settings a resume state belongs to (the budget may change).

    Other methods' settings (e.g. ``n2s_grid`` for n2v) are left out: they do not change this
    run, and states written before those settings existed still match.
    """
    h = hashlib.sha256()
    ignored = {"iterations", "minutes", "device"} | (method_settings() - set(objective(method).settings))
    settings = {k: v for k, v in asdict(cfg).items() if k not in ignored}
    settings["method"] = method
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for p in planes:
        h.update(str(p.shape).encode())
        h.update(np.ascontiguousarray(p).tobytes())
    return h.hexdigest()


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state")


@torch.no_grad()
def _validate(model: torch.nn.Module, batches, device: torch.device, precision: str) -> float:
    model.eval()
    total, count = 0.0, 0.0
    for inp, target, mask in batches:
        with autocast(device, precision):
            pred = model(inp.contiguous(memory_format=torch.channels_last))
        m = mask.sum().item()
        total += complement_mse(pred, target, mask).item() * m
        count += m
    model.train()
    return total / max(count, 1.0)


def train(
    planes: Sequence[np.ndarray],
    cfg: TrainConfig,
    out: str | Path,
    *,
    method: str = "n2sr",
    resume: bool = False,
    sources: Sequence[str] = (),
    progress: bool = True,
) -> TrainResult:
    """Train `method` on noisy planes and write the best checkpoint to ``out``.

    Parameters
    ----------
    planes : sequence of ndarray (Y, X), any real dtype; ``(2, Y, X)`` for ``n2n``
        The noisy training images (for ``n2n``: pairs of independent captures of one field of
        view), each at least ``patch_size`` in both plane axes.
    cfg : TrainConfig
    out : path of the final checkpoint; ``<out>.state`` holds the resume state.
    method : "n2sr", "n2v", "n2s" or "n2n" (`n2sr.objectives`); recorded in the checkpoint.
    resume : continue from ``<out>.state`` when it belongs to the same data and settings.
    sources : names of the inputs, recorded in the checkpoint.
    """
    out = Path(out)
    t_start = time.monotonic()
    obj = objective(method, cfg)
    expected = (obj.captures,) if obj.captures > 1 else ()
    for i, p in enumerate(planes):
        name = sources[i] if i < len(sources) else f"plane {i}"
        if p.shape[:-2] != expected or p.ndim != 2 + len(expected):
            raise ValueError(f"{name}: {method} trains on arrays of shape {(*expected, 'Y', 'X')}, got {p.shape}")
        if min(p.shape[-2:]) < cfg.patch_size:
            raise ValueError(f"{name}: plane of shape {p.shape} is smaller than the training patch {cfg.patch_size}; lower patch_size")
    device = pick_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    normalizer = Normalizer.fit(planes, cfg.normalization)
    norm_planes = [normalizer.forward(p) for p in planes]
    train_planes, val_planes = split_validation(norm_planes, cfg)
    if not val_planes:
        log.warning("no validation data (images too small or val_fraction=0): the last model is kept")
    data = [torch.from_numpy(np.ascontiguousarray(p)).reshape(-1, *p.shape[-2:]) for p in train_planes]
    val_batches = _validation_batches([p.reshape(-1, *p.shape[-2:]) for p in val_planes], cfg, device, obj)

    # NHWC lets oneDNN (CPU) and cuDNN (GPU) pick their fast convolution kernels: about 2x per step here.
    model = build_model(cfg.model, sr=obj.scale == 2).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    mask_gen = torch.Generator(device=device).manual_seed(cfg.seed + 3)
    fingerprint = _fingerprint(planes, cfg, method)
    step, best_val, best_step, best_state, curve = 0, math.inf, 0, None, []
    elapsed_before = 0.0

    spath = state_path(out)
    if resume and spath.is_file():
        state = checkpoint.load(spath)
        if state["fingerprint"] != fingerprint:
            log.warning("%s belongs to other data or settings; starting from scratch", spath)
        else:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            data_gen.set_state(state["data_gen"])
            mask_gen.set_state(state["mask_gen"])
            torch.set_rng_state(state["torch_rng"])
            step, best_val, best_step = state["step"], state["best_val"], state["best_step"]
            best_state, curve = state["best_model"], state["curve"]
            elapsed_before = state["elapsed"]
            log.info("resumed from %s at step %d", spath, step)

    def header() -> dict:
        return {
            "format": checkpoint.FORMAT,
            "method": method,
            "scale": obj.scale,
            "model_config": asdict(cfg.model),
            "train_config": json.loads(json.dumps(asdict(cfg), default=str)),
            "normalizer": normalizer.to_dict(),
            "precision": precision,
            "device": str(device),
            "sources": list(sources),
            "versions": checkpoint.versions(),
        }

    def save_state() -> None:
        checkpoint.save(spath, {
            **header(), "fingerprint": fingerprint, "step": step, "model": model.state_dict(),
            "optimizer": opt.state_dict(), "data_gen": data_gen.get_state(), "mask_gen": mask_gen.get_state().cpu(),
            "torch_rng": torch.get_rng_state(), "best_val": best_val, "best_step": best_step,
            "best_model": best_state, "curve": curve, "elapsed": elapsed_before + time.monotonic() - t_start,
        })

    # a resumed run spends what is left of the budget, not a fresh one
    deadline = None if cfg.minutes is None else t_start + 60.0 * cfg.minutes - elapsed_before
    model.train()
    running, n_running, t_interval = 0.0, 0, time.monotonic()
    bar = tqdm(total=cfg.iterations, initial=step, disable=not progress, desc="train", unit="it",
               mininterval=0.5 if sys.stderr.isatty() else 30.0, file=sys.stderr)
    while step < cfg.iterations and (deadline is None or time.monotonic() < deadline):
        batch = _sample_batch(data, cfg, data_gen).to(device, non_blocking=True)
        inp, target, mask = obj.make(batch, mask_gen)
        with autocast(device, precision):
            pred = model(inp.contiguous(memory_format=torch.channels_last))
        loss = complement_mse(pred, target, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        running += loss.item()
        n_running += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4g}", refresh=False)
        last = step >= cfg.iterations or (deadline is not None and time.monotonic() >= deadline)
        if step % cfg.val_every == 0 or last:
            val = _validate(model, val_batches, device, precision) if val_batches else math.nan
            now = time.monotonic()
            curve.append({"step": step, "train_loss": running / n_running, "val_loss": val,
                          "seconds": elapsed_before + now - t_start, "it_per_s": n_running / max(now - t_interval, 1e-9)})
            running, n_running, t_interval = 0.0, 0, now
            if not val_batches or val < best_val:
                best_val, best_step = (val if val_batches else math.nan), step
                best_state = copy.deepcopy(model.state_dict())
        if step % cfg.checkpoint_every == 0 or last:
            save_state()
    bar.close()
    if best_state is None:
        best_state = model.state_dict()
    seconds = elapsed_before + time.monotonic() - t_start
    checkpoint.save(out, {**header(), "model": best_state, "step": best_step, "steps": step,
                          "best_val": best_val, "curve": curve, "seconds": seconds})
    return TrainResult(best_step=best_step, best_val=best_val, steps=step, curve=curve, seconds=seconds)


def write_curve(curve: Sequence[dict], csv_path: str | Path | None, png_path: str | Path | None) -> None:
    """Training curve as CSV and PNG (both written atomically)."""
    import pandas as pd

    from n2sr.io import atomic_path

    frame = pd.DataFrame(list(curve), columns=["step", "train_loss", "val_loss", "seconds", "it_per_s"])
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

