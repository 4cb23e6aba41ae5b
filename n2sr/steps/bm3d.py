"""Step `bm3d`: denoise every selected plane with BM3D, its noise estimated blind from the plane.

No training: the method needs no model. Outputs have the layout and attributes of the
`denoise` step's, so evaluation and reports treat BM3D like the learned methods. The selected
captures are held in memory (BM3D works on whole planes anyway).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from n2sr.bm3d import bm3d_denoise
from n2sr.config import DenoiseConfig
from n2sr.io.guard import check_outputs
from n2sr.io.images import write_image
from n2sr.io.planes import select
from n2sr.io.provenance import versions


def bm3d(input: str | os.PathLike[str], output: str | os.PathLike[str], *,
         captures: Sequence[int] | None = None, tiff: str | os.PathLike[str] | None = None,
         pyramid: int = DenoiseConfig.pyramid) -> None:
    """`pyramid`: as `denoise.pyramid` (multiscale levels of a large Zarr output)."""
    check_outputs([input], [output, tiff])
    selection = select(input, captures)
    stack = selection.read()
    denoised = np.empty(stack.shape, np.float32)
    for index in np.ndindex(*stack.shape[:-2]):
        denoised[index] = bm3d_denoise(stack[index])
    attrs = {"source": str(selection.path), "captures": selection.captures, "method": "bm3d",
             "noise": "blind Poisson-Gaussian + GAT", "versions": versions()}
    write_image(output, denoised, attrs=attrs, pyramid=pyramid)
    if tiff:
        write_image(tiff, denoised, attrs=attrs)
