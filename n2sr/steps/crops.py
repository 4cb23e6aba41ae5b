"""Step `crops`: before/after crops for the report, what a microscopist looks at before trusting a number.

The crop is the window with the most structure in the reference (highest variance), so
the figure shows edges and fine detail rather than empty background; every panel uses the
reference's display range, so brightness differences between methods stay visible. Without a
reference (its marker, `n2sr.steps.reference.no_reference`) the last panel (a denoised output)
chooses the window and the first (the noisy input) the display range, and no PSNR is shown.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from n2sr.errors import InputError
from n2sr.io.atomic import atomic_path
from n2sr.io.planes import capture_ids, load_planes
from n2sr.metrics import psnr
from n2sr.steps.reference import no_reference


def crops(reference: str | os.PathLike[str], images: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
          capture: int = 0, methods: Sequence[str] = (), size: int = 128, title: str = "") -> None:
    """Before/after figure of one capture: each image's plane that came from capture `capture`."""
    if methods and len(methods) != len(images):
        raise ValueError(f"{len(methods)} --methods name(s) for {len(images)} image(s); give one per image or none")
    ref = load_planes(reference)[0] if no_reference(reference) is None else None
    panels = {}
    for i, path in enumerate(images):
        path = Path(path)
        stack = load_planes(path)
        ids = capture_ids(path, stack.shape[0])
        if capture not in ids:
            raise InputError(path, f"holds captures {ids}, not capture {capture}")
        panels[methods[i] if methods else path.name.split(".")[0]] = stack[ids.index(capture)]
    try:
        crops_figure(ref, panels, out, size=size, title=title)
    except InputError:
        raise
    except ValueError as exc:  # e.g. a constant reference has no display range
        raise InputError(reference, str(exc)) from exc


def busiest_window(reference: np.ndarray, size: int) -> tuple[slice, slice]:
    """The ``size x size`` window (on a half-size grid) where the reference varies most."""
    ny, nx = reference.shape
    size = min(size, ny, nx)
    step = max(size // 2, 1)
    best, best_var = (0, 0), -1.0
    for y in range(0, ny - size + 1, step):
        for x in range(0, nx - size + 1, step):
            v = float(np.var(reference[y : y + size, x : x + size]))
            if v > best_var:
                best, best_var = (y, x), v
    y, x = best
    return slice(y, y + size), slice(x, x + size)


def crops_figure(reference: np.ndarray | None, panels: Mapping[str, np.ndarray], out: str | os.PathLike[str], *,
                 size: int = 128, data_range: float | None = None, title: str = "") -> None:
    """Write a PNG: the reference crop, then each panel's crop with its PSNR against the reference.

    Parameters
    ----------
    reference : ndarray (Y, X), or None: no reference panel and no PSNR (see the module docstring)
    panels : mapping name -> ndarray (Y, X), e.g. ``{"noisy": ..., "n2sr": ...}``
    data_range : PSNR data range (default: the reference's max - min, the authors' convention)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(panels.values())
    ref = np.asarray(reference if reference is not None else shown[-1], dtype=np.float64)
    window = busiest_window(ref, size)
    lo, hi = np.percentile(ref if reference is not None else np.asarray(shown[0], np.float64), [0.5, 99.8])
    rng = data_range if data_range is not None else float(ref.max() - ref.min())
    names = ["reference", *panels] if reference is not None else list(panels)
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3.3), squeeze=False)
    for ax, name in zip(axes[0], names):
        img = ref if name == "reference" else np.asarray(panels[name], dtype=np.float64)
        ax.imshow(img[window], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        label = name if name == "reference" or reference is None else f"{name}\nPSNR {psnr(ref, img, rng):.2f} dB"
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    ys, xs = window
    fig.suptitle(f"{title} crop y {ys.start}:{ys.stop}, x {xs.start}:{xs.stop}".strip(), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.92))  # leave room for the title above the panel labels
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
