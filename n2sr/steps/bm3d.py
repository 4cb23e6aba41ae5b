"""Step `bm3d`: denoise every selected plane with BM3D, its noise estimated blind from the plane.

No training: the method needs no model. Outputs have the layout and attributes of the
`denoise` step's, so evaluation and reports treat BM3D like the learned methods. The selected
captures are held in memory (BM3D works on whole planes anyway).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from n2sr.bm3d import REACH, bm3d_denoise
from n2sr.config import DenoiseConfig
from n2sr.estimate import black_box_sure, cropped_sure, fit, noise_kernel, noise_variance, record, unavailable
from n2sr.regions import crops
from n2sr.io.guard import check_outputs
from n2sr.io.images import write_image
from n2sr.io.planes import select
from n2sr.io.provenance import versions
from n2sr.noise import estimate_poisson_gaussian


def bm3d(input: str | os.PathLike[str], output: str | os.PathLike[str], *,
         captures: Sequence[int] | None = None, tiff: str | os.PathLike[str] | None = None,
         pyramid: int = DenoiseConfig.pyramid, estimate: bool = True,
         estimate_pixels: int = DenoiseConfig.estimate_pixels, scanned: bool = False) -> None:
    """`pyramid`: as `denoise.pyramid` (multiscale levels of a large Zarr output). `estimate`: also
    the Monte-Carlo SURE of every plane's output (`n2sr.estimate`), one more BM3D run per plane
    on the perturbed input, under the plane's fitted noise model; a plane of more than
    `estimate_pixels` (as `denoise.estimate_pixels`) gets it from crops instead. `scanned`: a
    point-scanning microscope's input, as `n2sr.steps.denoise.denoise`'s."""
    check_outputs([input], [output, tiff])
    selection = select(input, captures)
    stack = selection.read()
    denoised = np.empty(stack.shape, np.float32)
    estimates = []
    for i, index in enumerate(np.ndindex(*stack.shape[:-2])):
        denoised[index] = bm3d_denoise(stack[index])
        if estimate:
            estimates.append(_sure(stack[index], denoised[index], seed=i, pixels=estimate_pixels, scanned=scanned))
    attrs = {"source": str(selection.path), "captures": selection.captures, "method": "bm3d",
             "noise": "blind Poisson-Gaussian + GAT", "versions": versions(), "scanned": scanned,
             **({"estimates": estimates} if estimate else {})}
    write_image(output, denoised, attrs=attrs, pyramid=pyramid)
    if tiff:
        write_image(tiff, denoised, attrs=attrs)


def _sure(plane: np.ndarray, denoised: np.ndarray, seed: int, pixels: int = 0, scanned: bool = False) -> dict:
    """SURE of BM3D, run with the noise model it fitted to `plane` (a negative gain is BM3D's
    Gaussian case, as ``a = 0``), under the noise model every method's SURE uses
    (`n2sr.estimate.fit`: for white noise the same shape, scaled to the band's energy). A plane
    of more than `pixels` (0: no limit) is estimated on `crops` with `REACH` around them (where
    those cost less), BM3D run on each window twice (with and without the probe), so `denoised`
    is not used there."""
    y = np.asarray(plane, np.float64)
    try:  # what BM3D ran with: the probe pass must run the same denoiser
        raw = estimate_poisson_gaussian(y)
    except ValueError:  # a constant or saturated plane: no noise to measure, no estimate
        return unavailable()
    kernel = noise_kernel(y, scanned)
    model = fit(y, kernel, scanned)  # SURE's noise model: shape and energy as for every method (`n2sr.estimate.fit`)
    if model is None:
        return unavailable()
    noise = (max(raw.a, 0.0), raw.b)
    energy = float(np.mean(noise_variance(y, model)))
    near = crops(y.shape, pixels, REACH)
    if near is None:
        sure, eps = black_box_sure(lambda z: bm3d_denoise(z, noise=noise), y, denoised, model, seed, kernel)
        return record(model, energy, sure, eps, pixels=y.size)
    windows = [y[c.window[0]:c.window[2], c.window[1]:c.window[3]] for c in near]
    sure, eps = cropped_sure(lambda z, c: bm3d_denoise(z, noise=noise)[c.inner], windows, model, seed, near, scanned)
    return record(model, energy, sure, eps, pixels=sum(c.region_pixels for c in near))
