"""The training loop of every learned method (paper Sec. 2.3, authors' defaults): pure, no files.

What differs between methods (input, target, loss mask, network) is the method's
`n2sr.nn.objectives.Objective`; crops, validation, exact resume, normalisation and precision
are shared, so the baselines get exactly Noise2SR's treatment.

Each iteration draws random crops (the authors': 128x128, batch 16) on the training device from
planes that were moved there once (`n2sr.nn.sampling`), turns them into the method's
example (for Noise2SR: the half-size sub-sample ``y_J`` and the complement pixels ``y_Jc``)
and takes one Adam step: at the authors' constant lr 1e-4, or (recipe ``fast``) on the
schedule of `n2sr.nn.schedule`, whose moving average of the weights is then what is
validated and returned. Held-out noisy patches, scored with the same
self-supervised loss and fixed masks, choose the returned weights: the complement loss
equals the supervised loss plus the noise variance (Theorem 1), so its minimum is the best
model without any clean image. Nothing is read back to the host between validation points:
the training loss is summed on the device and read once per ``val_every`` interval.

`fit` takes arrays and settings and returns the curve and the best weights. Every
``checkpoint_every`` iterations it hands a resume state to the caller's ``on_state``
(the step writes it to disk); given that state back as ``resume``, a killed run continues and,
with the same seed, ends exactly where an uninterrupted one would, because the crop and mask
generators are part of the state.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from n2sr.config import TrainConfig
from n2sr.nn.decorrelate import record, resolve_stride
from n2sr.nn.whiten import whiten_planes
from n2sr.nn.device import autocast, pick_device, resolve_precision
from n2sr.nn.model import build_model
from n2sr.nn.normalize import Normalizer
from n2sr.nn.objectives import Objective, objective
from n2sr.nn.sampling import PlaneBank
from n2sr.nn.schedule import WeightAverage, budget_spent, lr_factor
from n2sr.nn.subsample import complement_mse

log = logging.getLogger(__name__)
SAMPLER = "device-v1"  # `n2sr.nn.sampling.PlaneBank.sample`, one device generator


@dataclass
class TrainResult:
    """What a run produced: the best weights and everything a checkpoint records about them."""

    best_state: dict[str, torch.Tensor]
    best_step: int
    best_val: float
    steps: int
    curve: list[dict[str, float]]
    seconds: float
    normalizer: Normalizer
    precision: str
    device: str
    scale: int
    config: TrainConfig  # with the recipe resolved (`TrainConfig.resolved`)
    stride: dict[str, Any] | None = None  # `n2sr.nn.decorrelate.record`: the stride used and why


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


def _sample_batch(bank: PlaneBank, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random crops (with optional flips / 90-degree rotations) of the bank's planes, on its
    device: (B, C, P, P). `gen` lives on the same device (`n2sr.nn.sampling`)."""
    return bank.sample(cfg.batch_size, cfg.patch_size, gen, augment=cfg.augment)


def fingerprint(planes: Sequence[np.ndarray], cfg: TrainConfig, obj: Objective, init_sha256: str = "") -> str:
    """Identifies the data, method, settings and initial weights a resume state belongs to
    (the budget may change)."""
    h = hashlib.sha256()
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("iterations", "minutes", "device")}
    settings["init_sha256"] = init_sha256
    settings["method"] = obj.name
    settings["sampler"] = SAMPLER  # a state drawn with another sampler cannot continue exactly
    if obj.settings is not None:
        settings["method_settings"] = asdict(obj.settings)
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for p in planes:
        h.update(str(p.shape).encode())
        h.update(np.ascontiguousarray(p).tobytes())
    return h.hexdigest()


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


def check_planes(planes: Sequence[np.ndarray], cfg: TrainConfig, obj: Objective, sources: Sequence[str] = ()) -> None:
    """Every plane has the method's shape and holds at least one training patch."""
    expected = (obj.captures,) if obj.captures > 1 else ()
    if not planes:
        raise ValueError("no training planes")
    for i, p in enumerate(planes):
        name = sources[i] if i < len(sources) else f"plane {i}"
        if p.shape[:-2] != expected or p.ndim != 2 + len(expected):
            raise ValueError(f"{name}: {obj.name} trains on arrays of shape {(*expected, 'Y', 'X')}, got {p.shape}")
        if min(p.shape[-2:]) < cfg.patch_size:
            raise ValueError(f"{name}: plane of shape {p.shape} is smaller than the training patch "
                             f"{cfg.patch_size}; lower patch_size")


class _Run:
    """The mutable state of one training run: model, optimiser, generators, best weights, curve."""

    def __init__(self, cfg: TrainConfig, obj: Objective, device: torch.device,
                 init: dict[str, torch.Tensor] | None = None) -> None:
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, sr=obj.scale == 2)
        if init is not None:
            self.model.load_state_dict(init)
        # NHWC lets oneDNN (CPU) and cuDNN (GPU) pick their fast convolution kernels: about 2x per step here.
        self.model.to(device, memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.average = WeightAverage(self.model, cfg.ema) if cfg.recipe == "fast" and cfg.ema > 0 else None
        self.data_gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.mask_gen = torch.Generator(device=device).manual_seed(cfg.seed + 3)
        self.step, self.best_val, self.best_step, self.best_state = 0, math.inf, 0, None
        self.curve: list[dict[str, float]] = []
        self.elapsed_before = 0.0
        # the training loss summed since the last curve row, on the device: reading it every step
        # would make the host wait for the GPU every step
        self.running, self.n_running = torch.zeros((), dtype=torch.float32, device=device), 0

    def state(self, elapsed: float) -> dict[str, Any]:
        return {"step": self.step, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "data_gen": self.data_gen.get_state().cpu(), "mask_gen": self.mask_gen.get_state().cpu(),
                "torch_rng": torch.get_rng_state(), "best_val": self.best_val, "best_step": self.best_step,
                "best_model": self.best_state, "curve": self.curve, "elapsed": elapsed,
                "running_loss": self.running.cpu().clone(), "running_steps": self.n_running,
                "average": self.average.state() if self.average is not None else None}

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.data_gen.set_state(state["data_gen"])
        self.mask_gen.set_state(state["mask_gen"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.best_val, self.best_step = state["step"], state["best_val"], state["best_step"]
        self.best_state, self.curve, self.elapsed_before = state["best_model"], state["curve"], state["elapsed"]
        self.running.copy_(state["running_loss"])
        self.n_running = state["running_steps"]
        if self.average is not None:
            self.average.restore(state["average"])

    @property
    def scored(self) -> torch.nn.Module:
        """The weights validation scores and the run returns: the average where there is one."""
        return self.average.model if self.average is not None else self.model

    def record(self, val: float | None, train_loss: float, seconds: float, it_per_s: float) -> None:
        """One curve row; keep the weights when the validation loss is the lowest so far (or,
        without validation data, the latest)."""
        self.curve.append({"step": self.step, "train_loss": train_loss, "val_loss": math.nan if val is None else val,
                           "seconds": seconds, "it_per_s": it_per_s})
        if val is None or val < self.best_val:
            self.best_val, self.best_step = math.nan if val is None else val, self.step
            self.best_state = copy.deepcopy(self.scored.state_dict())


def fit(
    planes: Sequence[np.ndarray],
    cfg: TrainConfig,
    *,
    method: str = "n2sr",
    settings: Any = None,
    resume: dict[str, Any] | None = None,
    on_state: Callable[[dict[str, Any]], None] | None = None,
    sources: Sequence[str] = (),
    progress: bool = True,
    init: tuple[str, dict[str, torch.Tensor]] | None = None,
) -> TrainResult:
    """Train `method` on noisy planes.

    Parameters
    ----------
    planes : sequence of ndarray (Y, X), any real dtype; ``(2, Y, X)`` for ``n2n``
        The noisy training images, each at least ``patch_size`` in both plane axes.
    method, settings : the method (`n2sr.nn.objectives.METHODS`) and its `n2sr.config` settings.
    resume : a state earlier handed to `on_state`; ignored (with a warning) when it belongs to
        other data or settings.
    on_state : called with the resume state every ``checkpoint_every`` iterations and at the end.
    sources : names of the planes, for error messages.
    init : (sha256, weights) to start from instead of a random initialisation (the caller
        checks the architecture); the hash is part of the resume fingerprint.
    """
    t_start = time.monotonic()
    device = pick_device(cfg.device)
    cfg = cfg.resolved(device.type == "cuda")
    stride, corr, kernel = resolve_stride(cfg.stride, planes, cfg.whiten) if method == "n2sr" else (2, None, None)
    if kernel is not None:  # trained, like every later input, in the whitened domain (n2sr.nn.whiten)
        planes = whiten_planes(planes, kernel)
    obj = objective(method, settings, stride)
    crops = replace(cfg, patch_size=cfg.patch_size * obj.crop)  # stride > 2: crop P PD sub-images from these
    check_planes(planes, crops, obj, sources)
    precision = resolve_precision(cfg.precision, device)
    normalizer = Normalizer.fit(planes, cfg.normalization)
    norm_planes = [normalizer.forward(p) for p in planes]
    train_planes, val_planes = split_validation(norm_planes, crops)
    if not val_planes:
        log.warning("no validation data (images too small or val_fraction=0): the last model is kept")
    bank = PlaneBank.from_planes(train_planes, device)  # on the device once; batches are cut there
    val_batches = _validation_batches([p.reshape(-1, *p.shape[-2:]) for p in val_planes], crops, device, obj)
    run = _Run(cfg, obj, device, None if init is None else init[1])
    key = fingerprint(planes, cfg, obj, "" if init is None else init[0])
    if resume is not None:
        if resume.get("fingerprint") != key:
            log.warning("the resume state belongs to other data or settings; starting from scratch")
        else:
            run.restore(resume)
            log.info("resumed at step %d", run.step)

    def elapsed() -> float:
        return run.elapsed_before + time.monotonic() - t_start

    # a resumed run spends what is left of the budget, not a fresh one
    deadline = None if cfg.minutes is None else t_start + 60.0 * cfg.minutes - run.elapsed_before
    run.model.train()
    t_interval, n_interval = time.monotonic(), 0
    bar = tqdm(total=cfg.iterations, initial=run.step, disable=not progress, desc="train", unit="it",
               mininterval=0.5 if sys.stderr.isatty() else 30.0, file=sys.stderr)
    while run.step < cfg.iterations and (deadline is None or time.monotonic() < deadline):
        if cfg.recipe == "fast":
            # the rate at the middle of this step: with a step cap that binds before the clock,
            # the steps' fraction always leads, so the rates (and the run) stay reproducible
            done = budget_spent(run.step + 0.5, cfg.iterations, elapsed(), cfg.minutes)
            for group in run.opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(done, cfg.warmup)
        run.running += _step(run, obj, _sample_batch(bank, crops, run.data_gen), device, precision)
        if run.average is not None:
            run.average.update(run.model)
        run.step += 1
        run.n_running += 1
        n_interval += 1
        bar.update(1)
        last = run.step >= cfg.iterations or (deadline is not None and time.monotonic() >= deadline)
        if run.step % cfg.val_every == 0 or last:
            val = _validate(run.scored, val_batches, device, precision) if val_batches else None
            train_loss = run.running.item() / run.n_running  # the one read of the loss per curve row
            now = time.monotonic()
            run.record(val, train_loss, elapsed(), n_interval / max(now - t_interval, 1e-9))
            bar.set_postfix(loss=f"{train_loss:.4g}", refresh=False)
            run.running.zero_()
            run.n_running, n_interval, t_interval = 0, 0, now
        if on_state is not None and (run.step % cfg.checkpoint_every == 0 or last):
            on_state({"fingerprint": key, **run.state(elapsed())})
    bar.close()
    return TrainResult(best_state=run.best_state if run.best_state is not None else run.scored.state_dict(),
                       best_step=run.best_step, best_val=run.best_val, steps=run.step, curve=run.curve,
                       seconds=elapsed(), normalizer=normalizer, precision=precision, device=str(device),
                       scale=obj.scale, config=cfg, stride=record(stride, corr, cfg.stride, kernel, cfg.whiten))


def _step(run: _Run, obj: Objective, batch: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """One optimiser step on one batch; returns the loss as a detached 0-d tensor on the device
    (no host sync: read it with ``.item()`` only when needed)."""
    inp, target, mask = obj.make(batch, run.mask_gen)
    with autocast(device, precision):
        pred = run.model(inp.contiguous(memory_format=torch.channels_last))
    loss = complement_mse(pred, target, mask)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    return loss.detach()
