"""n2sr.steps.reference: averages reproduce FMD's avg50 exactly, in memory and streamed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from n2sr.io import images
from n2sr.io import omezarr
from n2sr.steps.ingest import ingest, natural_key
from n2sr.errors import InputError
from n2sr.steps.reference import reference, round_half_up

FMD = Path("fmd") / "Confocal_BPAE_B"


def fmd_fov1() -> Path:
    root = Path(os.environ.get("N2SR_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    if not (root / FMD / "raw" / "1").is_dir():
        pytest.skip(f"FMD data not found under {root}; set N2SR_DATA to the shared data root")
    return root / FMD


def zarr_reference(tmp_path: Path, stack: np.ndarray) -> np.ndarray:
    """The `reference` step's output for captures `stack` (t first), read back."""
    images.write_image(tmp_path / "in.zarr", stack)
    return omezarr.open_image(reference(tmp_path / "in.zarr", tmp_path / "ref.zarr"))[...]


def test_ties_round_half_up_not_to_even(tmp_path):
    stack = np.array([[2, 3, 4, 5, 0], [3, 4, 4, 6, 1]], np.uint8)[:, None, :]  # means 2.5 3.5 4 5.5 0.5
    out = zarr_reference(tmp_path, stack)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out.ravel(), [3, 4, 4, 6, 1])
    assert not np.array_equal(np.round(stack.mean(0)).ravel(), out.ravel())  # what np.round would get wrong


def test_negative_ints_floor_mean_plus_half(tmp_path):
    stack = np.array([[-3, -3, -2], [-2, -4, 7]], np.int16)[:, None, :]  # means -2.5 -3.5 2.5
    np.testing.assert_array_equal(zarr_reference(tmp_path, stack).ravel(), [-2, -3, 3])


def test_no_overflow():
    total = np.full((4, 3), 300 * 65535, np.int64)
    out = round_half_up(total, 300, np.dtype(np.uint16))
    assert out.dtype == np.uint16 and (out == 65535).all()


def test_float_stays_float32_mean(tmp_path):
    stack = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    out = zarr_reference(tmp_path, stack)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], stack.mean(0), rtol=1e-6)


def test_a_given_reference_file_is_converted_as_it_is(tmp_path):
    plane = np.random.default_rng(3).integers(0, 255, (6, 5), dtype=np.uint8)
    Image.fromarray(plane).save(tmp_path / "avg50.png")
    out = omezarr.open_image(reference(tmp_path / "avg50.png", tmp_path / "ref.zarr"))
    assert out.shape == (1, 1, 1, 6, 5)
    np.testing.assert_array_equal(out[0, 0, 0], plane)


def test_reference_zarr_matches_in_memory(tmp_path):
    stack = np.random.default_rng(1).integers(0, 255, (7, 2, 3, 6, 5), dtype=np.uint8)
    images.write_image(tmp_path / "in.zarr", stack, attrs={"source": "x.tif"})
    out = reference(tmp_path / "in.zarr", tmp_path / "ref.zarr")
    ref = omezarr.open_image(out)
    assert ref.shape == (1, 2, 3, 6, 5) and ref.dtype == np.uint8
    expected = (2 * stack.astype(np.int64).sum(0) + 7) // 14  # floor(mean + 0.5)
    np.testing.assert_array_equal(ref[0], expected)
    attrs = omezarr.read_attrs(out)
    assert attrs["captures"] == 7 and attrs["derived_from"]["source"] == "x.tif"


def test_reference_zarr_float(tmp_path):
    stack = np.random.default_rng(2).random((4, 6, 5), dtype=np.float32)
    images.write_image(tmp_path / "in.zarr", stack)
    ref = omezarr.open_image(reference(tmp_path / "in.zarr", tmp_path / "ref.zarr"))
    assert ref.dtype == np.float32
    np.testing.assert_allclose(ref[0, 0, 0], stack.mean(0), rtol=1e-6)


def test_reference_zarr_refuses_non_image(tmp_path):
    with pytest.raises(InputError, match="missing.zarr: no such file"):
        reference(tmp_path / "missing.zarr", tmp_path / "ref.zarr")
    assert not (tmp_path / "ref.zarr").exists()


@pytest.mark.data
def test_fmd_avg50_reproduced_exactly():
    fov = fmd_fov1()
    files = sorted((fov / "raw" / "1").glob("*.png"), key=lambda f: natural_key(f.name))
    assert len(files) == 50
    stack = np.stack([images.read_image(f) for f in files])
    gt = images.read_image(fov / "gt" / "1" / "avg50.png")
    np.testing.assert_array_equal(np.floor(stack.astype(np.float64).mean(0) + 0.5).astype(np.uint8), gt)


@pytest.mark.data
def test_fmd_avg50_reproduced_by_streamed_reference(tmp_path):
    fov = fmd_fov1()
    ingest(fov / "raw" / "1", tmp_path / "raw.zarr")
    ref = omezarr.open_image(reference(tmp_path / "raw.zarr", tmp_path / "ref.zarr"))
    np.testing.assert_array_equal(ref[0, 0, 0], np.asarray(Image.open(fov / "gt" / "1" / "avg50.png")))
