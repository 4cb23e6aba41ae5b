"""PSNR and SSIM of a denoised plane against its reference, in both conventions in use.

The two numbers depend on the data range ``R`` (PSNR = 10 log10(R^2 / MSE); SSIM's
stabilising constants are (0.01 R)^2 and (0.03 R)^2), and the literature uses two:

``fixed``
    ``R`` is the full scale of the data: the reference's unsigned dtype (255 for 8-bit FMD
    PNGs, 65535 for 16-bit), or a range or bit depth given explicitly. It does not depend on
    the image, so numbers are comparable across images and configurations. Most denoising
    papers on FMD use it. The dtype is only taken as the scale when the data can fill it:
    signed integers (which may hold negative values) and wide unsigned data whose maximum
    fits in at most 4 bits fewer (12-bit camera data stored as uint16) are refused, since
    their dtype's full scale would overstate PSNR by many dB; pass a data range or bit
    depth instead.
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


# Unsigned data wider than 8 bits whose maximum fits in this many bits fewer than the dtype
# (12-bit data in uint16) do not fill their dtype: its full scale would be a guess.
SPARE_BITS = 4


def fixed_range(ref_dtype: np.dtype | type, maximum: float | None = None) -> float:
    """Full scale of an unsigned integer dtype: the ``fixed`` convention's data range.

    Float references carry no scale (0..1? photons? 0..255 as float?), and signed integers
    no known one (int16 may hold offset-subtracted data with negative values), so guessing
    would silently shift every PSNR; they need an explicit range instead. `maximum` (the
    reference's largest value), when given, is checked against the dtype: uint16 data
    whose maximum is below 4096 are most likely 12-bit, scored with 65535 they would gain
    about 24 dB, so they need an explicit range or bit depth too.
    """
    dtype = np.dtype(ref_dtype)
    if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
        raise ValueError(
            f"reference dtype {dtype} has no fixed data range; pass one explicitly "
            "(e.g. fixed_data_range=255 for 8-bit data rescaled to float)"
        )
    if np.issubdtype(dtype, np.signedinteger):
        raise ValueError(
            f"reference dtype {dtype} is signed, so its full scale ({int(np.iinfo(dtype).max) - int(np.iinfo(dtype).min)}) "
            "is no data range the data can fill; give the range (data_range) or the bit depth (bits) explicitly"
        )
    bits = dtype.itemsize * 8
    if maximum is not None and bits > 8:
        used = max(int(maximum), 1).bit_length()
        if used <= bits - SPARE_BITS:
            raise ValueError(
                f"reference dtype {dtype} has maximum {int(maximum)}, which fits in {used} bits: the data are "
                f"probably not {bits}-bit, and scoring them with range {2 ** bits - 1} would overstate PSNR; "
                f"give the bit depth (bits, e.g. {max(used, 12)}) or the range (data_range) explicitly"
            )
    return float(np.iinfo(dtype).max)


def bits_range(bits: int) -> float:
    """Data range of `bits`-bit unsigned data: ``2**bits - 1``."""
    if not 1 <= int(bits) <= 32:
        raise ValueError(f"bits must be between 1 and 32; got {bits}")
    return float(2 ** int(bits) - 1)


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


def evaluate_pair(ref: np.ndarray, img: np.ndarray, *, fixed_data_range: float | None = None,
                  bits: int | None = None) -> dict[str, float]:
    """PSNR and SSIM of one plane in both conventions.

    Parameters
    ----------
    ref, img : ndarray (Y, X), same shape
    fixed_data_range : float, optional
        Data range of the ``fixed`` convention; default `fixed_range` of ``ref.dtype``
        (required for float and signed references, and for wide unsigned data that do not
        fill their dtype).
    bits : int, optional
        Bit depth of the data instead of `fixed_data_range`: range ``2**bits - 1``.

    Returns
    -------
    dict
        ``psnr``, ``ssim`` (fixed range), ``psnr_per_image``, ``ssim_per_image`` (the
        authors' range), ``data_range`` (fixed), ``data_range_per_image`` and
        ``data_range_source`` (``dtype``, ``bits`` or ``data_range``: where the fixed range came from).
    """
    ref, img = np.asarray(ref), np.asarray(img)
    if fixed_data_range is not None and bits is not None:
        raise ValueError("give a fixed data range or a bit depth, not both")
    if bits is not None:
        fixed, source = bits_range(bits), "bits"
        peak = float(np.max(ref))
        if peak > fixed or float(np.min(ref)) < 0:
            raise ValueError(f"reference values {float(np.min(ref)):g}..{peak:g} do not fit in {bits} bits "
                             f"(0..{fixed:g}); give the right bit depth or a data range")
    elif fixed_data_range is not None:
        fixed, source = float(fixed_data_range), "data_range"
    else:
        fixed, source = fixed_range(ref.dtype, maximum=float(np.max(ref)) if ref.size else None), "dtype"
    own = per_image_range(ref)
    return {
        "psnr": psnr(ref, img, fixed),
        "ssim": ssim(ref, img, fixed),
        "psnr_per_image": psnr(ref, img, own),
        "ssim_per_image": ssim(ref, img, own),
        "data_range": fixed,
        "data_range_per_image": own,
        "data_range_source": source,
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
