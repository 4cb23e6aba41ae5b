"""Reference-free estimates of a network's output: the extra forward passes they need.

The arithmetic is in `n2sr.estimate`; this module runs the network on what it needs, for one
plane at a time: the output on a slightly perturbed input (Monte-Carlo SURE, one pass) and
the held-out predictions of Theorem 1 (`draws` passes: Noise2SR's sub-sampled input at half
size, whose 2x output predicts the complement pixels; the blind-spot input of Noise2Void or
Noise2Self, whose output predicts the masked pixels). The sub-sampler and the masks are the
training ones (`n2sr.nn.subsample`, `n2sr.nn.blindspot`), drawn from a generator seeded per plane.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from n2sr import estimate
from n2sr.config import N2SConfig, N2VConfig
from n2sr.nn.blindspot import n2s_mask, n2v_mask
from n2sr.nn.subsample import subsample

HELD_OUT = {"n2sr": "complement", "n2v": "masked", "n2s": "masked"}
"""Methods with a Theorem-1 estimate and what their held-out pixels are."""


class Runner(Protocol):
    def denoise_array(self, arr: np.ndarray, return_sr: bool = False, progress: bool = True
                      ) -> tuple[np.ndarray, np.ndarray | None]: ...


def plane_estimates(runner: Runner, plane: np.ndarray, denoised: np.ndarray, *, method: str,
                    settings: dict[str, Any] | None, sr: bool, draws: int, seed: int) -> dict[str, Any]:
    """The estimates of one plane's output `denoised` (float, as the network gave it).

    `sr`: the runner has the 2x head on the 2x2 sub-sampler (Noise2SR, stride 2); only then is
    the complement estimate defined. Returns the fitted noise and both estimates (MSE and its
    standard error, NaN where the method has none) as plain numbers for the output's attributes.
    """
    y = np.asarray(plane, np.float64)
    model = estimate.fit(y)
    if model is None:  # a constant or saturated plane: no noise to measure, no estimate
        return estimate.unavailable()
    sure, eps = estimate.black_box_sure(lambda z: _run(runner, z), y, denoised, model, seed)
    kind = HELD_OUT.get(method) if method != "n2sr" or sr else None
    held = estimate.NAN
    if kind is not None and draws > 0:
        preds, masks = held_out_predictions(runner, y, method, settings, draws, seed)
        held = estimate.held_out(y, preds, masks, model)
    energy = float(np.mean(estimate.noise_variance(y, model)))
    return estimate.record(model, energy, sure, eps, held, kind or "", draws if kind else 0)


def held_out_predictions(runner: Runner, y: np.ndarray, method: str, settings: dict[str, Any] | None,
                         draws: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`draws` predictions of the plane and their held-out masks (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(y, np.float32))[None, None]
    preds, masks = [], []
    for _ in range(draws):
        if method == "n2sr":
            y_j, mask = subsample(x, gen)
            _, sr = runner.denoise_array(y_j[0, 0].numpy(), return_sr=True, progress=False)
            pred = np.zeros(y.shape, np.float64)
            pred[:sr.shape[-2], :sr.shape[-1]] = sr  # an odd last row/column is outside every cell (mask 0)
        else:
            if method == "n2v":
                cfg = N2VConfig(**(settings or {}))
                inp, mask = n2v_mask(x, gen, box=cfg.box, radius=cfg.radius)
            else:
                inp, mask = n2s_mask(x, gen, grid=N2SConfig(**(settings or {})).grid)
            pred = _run(runner, inp[0, 0].numpy())
        preds.append(pred)
        masks.append(mask[0, 0].numpy() > 0)
    return preds, masks


def _run(runner: Runner, plane: np.ndarray) -> np.ndarray:
    out, _ = runner.denoise_array(np.asarray(plane, np.float32), progress=False)
    return np.asarray(out, np.float64)
