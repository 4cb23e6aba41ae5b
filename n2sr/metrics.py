"""PSNR and SSIM of a denoised plane against its reference, in both conventions in use.

The two numbers depend on the data range ``R`` (PSNR = 10 log10(R^2 / MSE); SSIM's
stabilising constants are (0.01 R)^2 and (0.03 R)^2), and the literature uses two:

``fixed``
    ``R`` is the full scale of the reference's dtype (255 for 8-bit FMD PNGs, 65535 for
    16-bit). It depends only on the file format, so numbers are comparable across images
    and configurations. Most denoising papers on FMD use it.
``per_image``
    ``R = ref.max() - ref.min()``, what the Noise2SR authors' code (``utils.py``) uses and
    so what their Table 2 reports. References rarely span the whole dtype range, so ``R``
    is smaller and PSNR lower for the same error: about 1.8 dB on FMD.

Both are computed with scikit-image (SSIM with its default 7x7 uniform window, as the
authors did) on float64 copies, so integer inputs never wrap around and a float32
denoiser output is compared at full precision. Every reported number should say which
convention it uses; `evaluate_pair` returns both.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def fixed_range(ref_dtype: np.dtype | type) -> float:
    """Full scale of an integer dtype: the ``fixed`` convention's data range.

    Float references carry no scale (0..1? photons? 0..255 as float?), so guessing would
    silently shift every PSNR; they need an explicit range instead.
    """
    dtype = np.dtype(ref_dtype)
    if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
        raise ValueError(
            f"reference dtype {dtype} has no fixed data range; pass one explicitly "
            "(e.g. fixed_data_range=255 for 8-bit data rescaled to float)"
        )
    info = np.iinfo(dtype)
    return float(int(info.max) - int(info.min))


def per_image_range(ref: np.ndarray) -> float:
    """``ref.max() - ref.min()``: the authors' (``per_image``) data range.

    A constant reference has range 0, where both metrics are undefined (division by
    zero); that is a data problem (a blank or saturated reference), so it is an error.
    """
    ref = np.asarray(ref, dtype=np.float64)
    lo, hi = float(ref.min()), float(ref.max())
    if hi == lo:
        raise ValueError(
            f"reference is constant ({lo:g}), so its per-image data range is 0 and PSNR/SSIM "
            "are undefined; check the reference image (blank or saturated?)"
        )
    return hi - lo


def psnr(ref: np.ndarray, img: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` when `img` equals `ref`.

    Parameters
    ----------
    ref, img : ndarray (Y, X), any real dtype, same shape
    data_range : float > 0
        ``R`` in 10 log10(R^2 / MSE); see the module docstring for the two conventions.
    """
    ref64, img64 = _as_pair(ref, img)
    _check_range(data_range)
    with np.errstate(divide="ignore"):  # MSE = 0 gives inf, which is the right answer
        return float(peak_signal_noise_ratio(ref64, img64, data_range=data_range))


def ssim(ref: np.ndarray, img: np.ndarray, data_range: float) -> float:
    """Mean structural similarity with scikit-image's defaults (7x7 uniform window).

    Parameters
    ----------
    ref, img : ndarray (Y, X), any real dtype, same shape, both sides >= 7
    data_range : float > 0
    """
    ref64, img64 = _as_pair(ref, img)
    _check_range(data_range)
    if min(ref64.shape) < 7:
        raise ValueError(f"SSIM needs planes of at least 7x7 pixels (its window); got {ref64.shape}")
    return float(structural_similarity(ref64, img64, data_range=data_range))


def evaluate_pair(ref: np.ndarray, img: np.ndarray, *, fixed_data_range: float | None = None) -> dict[str, float]:
    """PSNR and SSIM of one plane in both conventions.

    Parameters
    ----------
    ref, img : ndarray (Y, X), same shape
    fixed_data_range : float, optional
        Data range of the ``fixed`` convention; default `fixed_range` of ``ref.dtype``
        (required for float references).

    Returns
    -------
    dict
        ``psnr``, ``ssim`` (fixed range), ``psnr_per_image``, ``ssim_per_image`` (the
        authors' range), ``data_range`` (fixed) and ``data_range_per_image``.
    """
    ref, img = np.asarray(ref), np.asarray(img)
    fixed = fixed_range(ref.dtype) if fixed_data_range is None else float(fixed_data_range)
    own = per_image_range(ref)
    return {
        "psnr": psnr(ref, img, fixed),
        "ssim": ssim(ref, img, fixed),
        "psnr_per_image": psnr(ref, img, own),
        "ssim_per_image": ssim(ref, img, own),
        "data_range": fixed,
        "data_range_per_image": own,
    }


def _as_pair(ref: np.ndarray, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (reference, image) pair of planes and return float64 copies."""
    ref, img = np.asarray(ref), np.asarray(img)
    if ref.shape != img.shape:
        raise ValueError(f"reference shape {ref.shape} and image shape {img.shape} differ")
    if ref.ndim != 2:
        raise ValueError(f"metrics compare planes (Y, X); got shape {ref.shape}; evaluate stacks plane by plane")
    ref64, img64 = ref.astype(np.float64), img.astype(np.float64)
    for name, arr in (("reference", ref64), ("image", img64)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or Inf; a mean over such values would be meaningless")
    return ref64, img64


def _check_range(data_range: float) -> None:
    if not (np.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a finite number > 0; got {data_range}")
