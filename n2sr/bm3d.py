"""BM3D for Poisson-Gaussian data: estimate the noise, stabilise it, denoise, invert.

BM3D assumes additive white Gaussian noise of one known level. Fluorescence noise is
signal-dependent (``Var = a x + b``, see `n2sr.noise`), and a single sigma is wrong
everywhere: scikit-image's `estimate_sigma` returns roughly the background's noise on FMD,
half the noise at the mean intensity. So: estimate ``(a, b)`` from the plane itself (no
reference), apply the generalised Anscombe transform (noise std ~1 at all intensities),
run BM3D with sigma = 1, and map back with the exact unbiased inverse
(Makitalo & Foi 2013, "Optimal inversion of the generalized Anscombe transformation for
Poisson-Gaussian noise", IEEE TIP 22(1)).
"""

from __future__ import annotations

import bm3d
import numpy as np

from n2sr.gat import gat_forward, gat_inverse
from n2sr.noise import PoissonGaussian, estimate_poisson_gaussian

REACH = 64
"""Plane pixels around a region that BM3D's output there depends on, about: blocks of 8 matched
within a 39-pixel search window (the ``np`` profile), twice (the Wiener stage matches on the first
stage's estimate). The context of the crops its estimates are computed on (`n2sr.regions.crops`)."""

# Below this share of Poisson variance at the mean intensity the GAT only adds its
# inversion error: treat the noise as Gaussian with variance b.
_GAUSSIAN_SHARE = 0.01


def bm3d_denoise(
    img: np.ndarray, *, noise: str | tuple[float, float] | float = "auto", profile: str = "np"
) -> np.ndarray:
    """Denoise one plane with BM3D under a Poisson-Gaussian or Gaussian noise model.

    Parameters
    ----------
    img : ndarray (Y, X), any real dtype, in its own intensity units (e.g. 0-255)
    noise : "auto" | (a, b) | float
        ``"auto"``: `estimate_poisson_gaussian` on `img`. ``(a, b)``: the model
        ``Var = a x + b`` in the units of `img`. A float: the std of white Gaussian noise.
    profile : str
        `bm3d` profile (``"np"`` normal, ``"refilter"``, ``"vn"`` for very noisy, ...).

    Returns
    -------
    ndarray (Y, X), float32, in the units of `img`
    """
    z = np.asarray(img, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"expected a 2-D plane (Y, X), got shape {z.shape}")
    model = _noise_model(z, noise)
    share = model.a * max(float(z.mean()), 0.0)
    if model.a <= 0 or share < _GAUSSIAN_SHARE * max(model.b, 0.0):
        if model.b <= 0:
            raise ValueError(f"noise model {tuple(model)} has no positive variance; nothing to denoise")
        return _bm3d_unit_range(z, np.sqrt(model.b), profile).astype(np.float32)
    stabilised = gat_forward(z, model.a, model.b)
    denoised = _bm3d_unit_range(stabilised, 1.0, profile)
    return gat_inverse(denoised, model.a, model.b).astype(np.float32)


def _noise_model(z: np.ndarray, noise: str | tuple[float, float] | float) -> PoissonGaussian:
    if isinstance(noise, str):
        if noise != "auto":
            raise ValueError(f"noise must be 'auto', (a, b) or a sigma, got {noise!r}")
        return estimate_poisson_gaussian(z)
    if np.ndim(noise) == 0:
        sigma = float(noise)  # type: ignore[arg-type]
        if not sigma > 0:
            raise ValueError(f"noise sigma must be > 0, got {sigma}")
        return PoissonGaussian(0.0, sigma**2)
    a, b = (float(v) for v in noise)  # type: ignore[union-attr]
    if a < 0:
        raise ValueError(f"noise gain a must be >= 0, got {a}")
    return PoissonGaussian(a, b)


def _bm3d_unit_range(z: np.ndarray, sigma: float, profile: str) -> np.ndarray:
    """BM3D on `z` rescaled to [0, 1] (sigma with it), as in the authors' demos, then back.

    BM3D's thresholds scale with sigma, but its profiles were tuned on [0, 1] data; the
    rescaling keeps us on that ground whatever the intensity units.
    """
    lo, hi = float(z.min()), float(z.max())
    span = hi - lo if hi > lo else 1.0
    out = bm3d.bm3d((z - lo) / span, sigma_psd=sigma / span, profile=profile, stage_arg=bm3d.BM3DStages.ALL_STAGES)
    return np.asarray(out, dtype=np.float64) * span + lo
