"""The generalised Anscombe transform (GAT) of Poisson-Gaussian noise (`n2sr.noise`'s model).

`gat_forward` turns ``Var[y] = a x + b`` noise into noise of unit variance, and `gat_inverse` is
its exact unbiased inverse (closed-form approximation), so Gaussian denoisers (BM3D) can be used
and their output is not biased low in dark regions as the algebraic inverse would be.
"""

from __future__ import annotations

import numpy as np

_D_MIN = np.sqrt(1.5)  # 2 sqrt(3/8): E[2 sqrt(P + 3/8)] at zero photons, where I_C(D) = 0


def gat_forward(y: np.ndarray, a: float, b: float) -> np.ndarray:
    """Generalised Anscombe transform: Poisson-Gaussian ``(a, b)`` noise -> variance ~1.

    ``f(y) = 2 sqrt(max(y / a + 3/8 + b / a**2, 0))`` (Starck et al. 1998; Makitalo & Foi
    2013): the transform in photon units (``y / a``); the variance of ``f(y)`` is ~1 once a
    pixel collects a few photons (it is below 1 in the near-dark).

    Parameters
    ----------
    y : ndarray (...), real
    a : float > 0
    b : float (may be negative: a dark offset, see `n2sr.noise`)

    Returns
    -------
    ndarray, same shape, float64, >= 0
    """
    _check_gain(a)
    y = np.asarray(y, dtype=np.float64)
    return 2.0 * np.sqrt(np.maximum(y / a + 0.375 + b / a**2, 0.0))


def gat_inverse(d: np.ndarray, a: float, b: float) -> np.ndarray:
    """Exact unbiased inverse of `gat_forward`, closed-form approximation.

    A denoiser applied after the GAT estimates ``E[f(y)]``, not ``f(E[y])``; the algebraic
    inverse then biases dark regions. Makitalo & Foi (2011, 2013) give the closed-form
    approximation of the inverse of ``x -> E[f(y) | x]`` (in photon units, ``s2 = b / a**2``)::

        I(D) = D**2/4 + sqrt(3/2)/(4 D) - 11/(8 D**2) + 5 sqrt(3/2)/(8 D**3) - 1/8 - s2

    ``D`` below ``sqrt(3/2)`` (the zero-photon value) maps to the darkest level the model
    allows: 0, or the dark offset ``-b / a`` when ``b < 0`` (``-s2`` plays the role of the
    offset in photons then, which the same formula handles).

    Parameters
    ----------
    d : ndarray (...), real: denoised values in the stabilised domain
    a, b : float, as in `gat_forward`

    Returns
    -------
    ndarray, same shape, float64, in the units of the original image
    """
    _check_gain(a)
    d = np.maximum(np.asarray(d, dtype=np.float64), _D_MIN)
    s2 = b / a**2
    photons = d**2 / 4 + np.sqrt(1.5) / (4 * d) - 11 / (8 * d**2) + 5 * np.sqrt(1.5) / (8 * d**3) - 0.125
    return a * np.maximum(photons - s2, max(0.0, -s2))


def _check_gain(a: float) -> None:
    if not a > 0:
        raise ValueError(f"GAT needs a Poisson gain a > 0, got {a}; use a Gaussian denoiser for a = 0")
