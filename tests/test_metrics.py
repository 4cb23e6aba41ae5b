"""PSNR/SSIM in both conventions: against formulas, hand computations and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from n2sr import metrics


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ref = rng.integers(20, 200, size=(32, 32)).astype(np.uint8)
    img = np.clip(ref + rng.normal(0, 5, size=ref.shape), 0, 255).astype(np.uint8)
    return ref, img


def test_psnr_matches_direct_formula(pair):
    ref, img = pair
    mse = np.mean((ref.astype(np.float64) - img.astype(np.float64)) ** 2)
    for r in (255.0, 100.0):
        assert metrics.psnr(ref, img, r) == pytest.approx(10 * math.log10(r * r / mse), rel=1e-12)


def test_psnr_hand_computed():
    # One pixel off by 10 in 4: MSE = 25, PSNR = 10 log10(100^2 / 25) = 10 log10(400).
    ref = np.zeros((2, 2), np.uint8)
    img = np.array([[10, 0], [0, 0]], np.uint8)
    assert metrics.psnr(ref, img, 100.0) == pytest.approx(10 * math.log10(400), abs=1e-12)


def test_uint8_difference_does_not_wrap():
    ref = np.full((8, 8), 0, np.uint8)
    img = np.full((8, 8), 255, np.uint8)  # uint8 subtraction would wrap 0 - 255 to 1
    assert metrics.psnr(ref, img, 255.0) == pytest.approx(0.0, abs=1e-12)


def test_identical_images_give_inf_and_ssim_one(pair, recwarn):
    ref, _ = pair
    assert metrics.psnr(ref, ref.copy(), 255.0) == math.inf
    assert metrics.ssim(ref, ref.copy(), 255.0) == pytest.approx(1.0)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_ssim_is_skimage_default_window(pair):
    from skimage.metrics import structural_similarity

    ref, img = pair
    expected = structural_similarity(ref.astype(float), img.astype(float), data_range=255.0, win_size=7)
    assert metrics.ssim(ref, img, 255.0) == pytest.approx(expected, rel=1e-12)


def test_fixed_range():
    assert metrics.fixed_range(np.uint8) == 255.0
    assert metrics.fixed_range(np.uint8, maximum=3) == 255.0  # 8-bit data: the dtype is the camera's
    assert metrics.fixed_range(np.dtype("uint16")) == 65535.0
    assert metrics.fixed_range(np.uint16, maximum=40000) == 65535.0
    assert metrics.fixed_range(np.uint16, maximum=4096) == 65535.0  # 13 bits: could be 16-bit data
    with pytest.raises(ValueError, match="pass one explicitly"):
        metrics.fixed_range(np.float32)
    with pytest.raises(ValueError, match="int16 is signed"):
        metrics.fixed_range(np.int16)
    with pytest.raises(ValueError, match="fits in 12 bits"):
        metrics.fixed_range(np.uint16, maximum=4095)
    assert metrics.bits_range(12) == 4095.0


def test_scores_do_not_lie_about_the_range():
    """int16 with negative values and 12-bit data in uint16 are refused a guessed range, and
    scored with a given one; the row says where its range came from."""
    rng = np.random.default_rng(0)
    ref12 = rng.integers(100, 4000, (32, 32)).astype(np.uint16)
    img12 = (ref12 + rng.normal(0, 50, ref12.shape)).astype(np.float32)
    with pytest.raises(ValueError, match="fits in 12 bits"):
        metrics.evaluate_pair(ref12, img12)
    out = metrics.evaluate_pair(ref12, img12, bits=12)
    assert out["data_range"] == 4095.0 and out["data_range_source"] == "bits"
    assert out["psnr"] == pytest.approx(metrics.psnr(ref12, img12, 4095.0))
    with pytest.raises(ValueError, match="do not fit in 11 bits"):
        metrics.evaluate_pair(ref12, img12, bits=11)
    with pytest.raises(ValueError, match="not both"):
        metrics.evaluate_pair(ref12, img12, bits=12, fixed_data_range=4095)
    signed = (ref12.astype(np.int16) - 2000)
    with pytest.raises(ValueError, match="signed"):
        metrics.evaluate_pair(signed, img12 - 2000)
    out = metrics.evaluate_pair(signed, img12 - 2000, fixed_data_range=4095)
    assert out["data_range_source"] == "data_range"
    assert metrics.evaluate_pair(ref12.astype(np.uint8), ref12.astype(np.uint8))["data_range_source"] == "dtype"


def test_conventions_differ_as_expected(pair):
    ref, img = pair
    out = metrics.evaluate_pair(ref, img)
    own = float(ref.max()) - float(ref.min())
    assert out["data_range"] == 255.0
    assert out["data_range_per_image"] == own
    # Same MSE, smaller range: lower by exactly 20 log10(255 / own).
    assert out["psnr"] - out["psnr_per_image"] == pytest.approx(20 * math.log10(255.0 / own), rel=1e-9)
    assert out["ssim_per_image"] < out["ssim"]
    assert out["psnr"] == pytest.approx(metrics.psnr(ref, img, 255.0))


def test_float_reference_needs_fixed_range(pair):
    ref, img = pair
    with pytest.raises(ValueError, match="no fixed data range"):
        metrics.evaluate_pair(ref.astype(np.float32), img)
    out = metrics.evaluate_pair(ref.astype(np.float32), img.astype(np.float32), fixed_data_range=255)
    assert out["psnr"] == pytest.approx(metrics.evaluate_pair(ref, img)["psnr"])


def test_constant_reference_is_a_clear_error():
    ref = np.full((16, 16), 7, np.uint8)
    assert metrics.psnr(ref, ref + 1, 255.0) == pytest.approx(20 * math.log10(255.0))
    with pytest.raises(ValueError, match="constant .*per-image data range is 0"):
        metrics.evaluate_pair(ref, ref)


def test_bad_inputs_are_named():
    a, b = np.zeros((8, 8)), np.zeros((8, 9))
    with pytest.raises(ValueError, match=r"\(8, 8\).*\(8, 9\)"):
        metrics.psnr(a, b, 1.0)
    with pytest.raises(ValueError, match="planes"):
        metrics.ssim(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        metrics.psnr(a, np.full((8, 8), np.nan), 1.0)
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(a, a, 0.0)
    with pytest.raises(ValueError, match="7x7"):
        metrics.ssim(np.zeros((5, 5)), np.zeros((5, 5)), 1.0)
