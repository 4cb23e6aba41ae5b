"""Reference-free estimates of a network's output: the extra forward passes they need.

The arithmetic is in `n2sr.estimate`; this module runs the network on what it needs, for one
plane at a time: the output on a slightly perturbed input (Monte-Carlo SURE, one pass) and
the held-out predictions of Theorem 1 (`draws` passes: Noise2SR's sub-sampled input at half
size, whose 2x output predicts the complement pixels; the blind-spot input of Noise2Void or
Noise2Self, whose output predicts the masked pixels). The sub-sampler and the masks are the
training ones (`n2sr.nn.subsample`, `n2sr.nn.blindspot`), drawn from a generator seeded per plane.

A plane of more than `pixels` (``denoise.estimate_pixels``) is estimated on `n2sr.regions.crops`
of about that many pixels, each run with the engine's block context around it as a streamed
block is (twice that for Noise2SR's half-size sub-sampled input, whose network reach spans two
plane pixels per pixel), so the passes cost about `pixels` however large the plane. SURE then
takes the unperturbed output from the same windows as the perturbed one (one more pass on the
crops, instead of the stored output), so the two differ by the probe only.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np
import torch

from n2sr import estimate, regions
from n2sr.config import MULTIPLE, N2SConfig, N2VConfig
from n2sr.correlation import Autocorrelation
from n2sr.nn.blindspot import n2s_mask, n2v_mask
from n2sr.nn.subsample import subsample

HELD_OUT = {"n2sr": "complement", "n2v": "masked", "n2s": "masked"}
"""Methods with a Theorem-1 estimate and what their held-out pixels are."""
CORRELATED = "correlated"
"""``held_out_kind`` of a plane whose noise reads widefield-like (`Autocorrelation.widefield`): no
held-out estimate. Theorem 1 needs pixel-wise independent noise; with correlated noise the held-out
pixels' noise is partly predicted from their neighbours', and the loss reads the MSE low (below 0,
an infinite PSNR, on every lag-1 0.6 row of `benchmarks/results/reference_free.md`)."""


class PlaneLike(Protocol):
    """A 2-D plane, or a view of one that reads only what is sliced (`n2sr.io.planes.PlaneView`)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray: ...


class Runner(Protocol):
    context: int

    def denoise_window(self, planes: np.ndarray, window: Any, return_sr: bool = False,
                       dtype: np.dtype | None = None) -> tuple[np.ndarray, np.ndarray | None]: ...

    def denoise_array(self, arr: np.ndarray, return_sr: bool = False, progress: bool = True
                      ) -> tuple[np.ndarray, np.ndarray | None]: ...


def plane_estimates(runner: Runner, plane: PlaneLike, denoised: np.ndarray | Callable[[], np.ndarray], *,
                    method: str, settings: dict[str, Any] | None, sr: bool, draws: int, seed: int,
                    pixels: int = 0, scanned: bool = False) -> dict[str, Any]:
    """The estimates of one plane's output `denoised` (float, as the network gave it; or a
    function giving it, called only where the whole plane is estimated).

    `plane`: the noisy plane, or a view of it that reads what is sliced (`n2sr.io.planes.PlaneView`):
    a plane estimated on crops is read only there, its noise fitted on the crops' windows, so the
    estimates of a huge plane take memory for `pixels`, not for the plane.
    `sr`: the runner has the 2x head on the 2x2 sub-sampler (Noise2SR, stride 2); only then is
    the complement estimate defined. `pixels`: estimate a larger plane on crops of about this
    many pixels (0: the whole plane). `scanned`: a point-scanning microscope's noise, correlated
    along the scan lines only (`n2sr.estimate.fit`). Returns the fitted noise and both estimates
    (MSE and its standard error, NaN where the method has none) as plain numbers for the output's
    attributes.
    """
    shape = tuple(plane.shape[-2:])
    kind = HELD_OUT.get(method) if (method != "n2sr" or sr) and draws > 0 else None
    held = estimate.NAN
    near = regions.crops(shape, pixels, runner.context, MULTIPLE)
    if near is None:
        y = np.asarray(plane[:, :], np.float64)
        kernel = estimate.noise_kernel(y, scanned)
        model = estimate.fit(y, kernel, scanned)
        if model is None:  # a constant or saturated plane: no noise to measure, no estimate
            return estimate.unavailable()
        out = denoised() if callable(denoised) else denoised
        sure, eps = estimate.black_box_sure(lambda z: _run(runner, z), y, out, model, seed, kernel)
        kind = _applicable(kind, kernel)
        if kind in HELD_OUT.values():
            preds, masks = held_out_predictions(runner, y, method, settings, draws, seed)
            held = estimate.held_out(y, preds, masks, model)
        counted, energy = y.size, float(np.mean(estimate.noise_variance(y, model)))
    else:
        windows = [np.asarray(plane[c.window[0]:c.window[2], c.window[1]:c.window[3]], np.float64) for c in near]
        kernel = estimate.noise_kernel(windows, scanned)
        model = estimate.fit(windows, kernel, scanned)
        if model is None:
            return estimate.unavailable()
        sure, eps = estimate.cropped_sure(lambda z, c: _window(runner, z, c, shape), windows, model, seed, near,
                                          scanned)
        kind = _applicable(kind, kernel)
        if kind in HELD_OUT.values():
            reach = runner.context * (2 if method == "n2sr" else 1)
            held = _cropped_held_out(runner, plane, [c.widened(reach, shape, MULTIPLE) for c in near], model,
                                     method, settings, draws, seed)
        estimated = np.concatenate([w[c.inner].ravel() for c, w in zip(near, windows)])
        counted, energy = estimated.size, float(np.mean(estimate.noise_variance(estimated, model)))
    return estimate.record(model, energy, sure, eps, held, kind or "", draws if kind in HELD_OUT.values() else 0,
                           counted)


def _applicable(kind: str | None, kernel: np.ndarray) -> str | None:
    """`kind`, or `CORRELATED` where the plane's noise `kernel` reads widefield-like, so that
    Theorem 1 does not hold."""
    return CORRELATED if kind is not None and Autocorrelation.from_kernel(kernel).widefield else kind


def _window(runner: Runner, z: np.ndarray, crop: regions.Crop, shape: tuple[int, int]) -> np.ndarray:
    """The output of `crop`'s region from its window `z`, as a streamed block computes it."""
    y0, x0, y1, x1 = crop.window
    out, _ = runner.denoise_window(np.asarray(z, np.float32)[None], ((y0, x0), crop.region, shape))
    return out[0]


def _cropped_held_out(runner: Runner, y: PlaneLike, parts: list[regions.Crop], model, method: str,
                      settings: dict[str, Any] | None, draws: int, seed: int) -> estimate.Estimate:
    """`estimate.held_out` pooled over the regions of `parts` (its error as `estimate.pooled`):
    each draw's predictions and masks are those of the windows (`held_out_predictions`), kept
    on the regions."""
    gen = torch.Generator().manual_seed(seed)
    ys, preds, masks = [], [[] for _ in range(draws)], [[] for _ in range(draws)]
    for c in parts:
        wy0, wx0, wy1, wx1 = c.window
        window = np.asarray(y[wy0:wy1, wx0:wx1], np.float64)
        ys.append(window[c.inner].ravel())
        for j, (pred, mask) in enumerate(zip(*held_out_predictions(runner, window, method, settings, draws, gen))):
            preds[j].append(pred[c.inner].ravel())
            masks[j].append(mask[c.inner].ravel())
    whole = estimate.held_out(np.concatenate(ys), [np.concatenate(p) for p in preds],
                              [np.concatenate(m) for m in masks], model)
    return estimate.pooled(whole, [estimate.held_out(ys[k], [p[k] for p in preds], [m[k] for m in masks], model)
                                   for k in range(len(parts))])


def held_out_predictions(runner: Runner, y: np.ndarray, method: str, settings: dict[str, Any] | None,
                         draws: int, seed: int | torch.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`draws` predictions of the plane and their held-out masks (see the module docstring),
    drawn from a generator seeded `seed` (or `seed` itself, a generator shared by several crops)."""
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
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
