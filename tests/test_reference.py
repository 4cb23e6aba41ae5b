"""n2sr.reference: averages reproduce FMD's avg50 exactly, in memory and streamed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from n2sr import io, omezarr
from n2sr.ingest import ingest, natural_key
from n2sr.io import InputError
from n2sr.reference import average_reference, reference_zarr

FMD = Path("fmd") / "Confocal_BPAE_B"


def fmd_fov1() -> Path:
    root = Path(os.environ.get("N2SR_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    if not (root / FMD / "raw" / "1").is_dir():
        pytest.skip(f"FMD data not found under {root}; set N2SR_DATA to the shared data root")
    return root / FMD


def test_ties_round_half_up_not_to_even():
    stack = np.array([[2, 3, 4, 5, 0], [3, 4, 4, 6, 1]], np.uint8)  # means 2.5 3.5 4 5.5 0.5
    out = average_reference(stack)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [3, 4, 4, 6, 1])
    assert not np.array_equal(np.round(stack.mean(0)), out)  # what np.round would get wrong


def test_negative_ints_floor_mean_plus_half():
    stack = np.array([[-3, -3, -2], [-2, -4, 7]], np.int16)  # means -2.5 -3.5 2.5
    np.testing.assert_array_equal(average_reference(stack), [-2, -3, 3])


def test_axis_and_no_overflow():
    stack = np.full((4, 3, 300), 65535, np.uint16)
    out = average_reference(stack, axis=2)
    assert out.shape == (4, 3) and out.dtype == np.uint16
    assert (out == 65535).all()


def test_float_stays_float32_mean():
    stack = np.random.default_rng(0).random((5, 6, 7))
    out = average_reference(stack.astype(np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, stack.astype(np.float32).mean(0), rtol=1e-6)


def test_reference_zarr_matches_in_memory(tmp_path):
    stack = np.random.default_rng(1).integers(0, 255, (7, 2, 3, 6, 5), dtype=np.uint8)
    io.write_image(tmp_path / "in.zarr", stack, attrs={"source": "x.tif"})
    out = reference_zarr(tmp_path / "in.zarr", tmp_path / "ref.zarr")
    ref = omezarr.open_image(out)
    assert ref.shape == (1, 2, 3, 6, 5) and ref.dtype == np.uint8
    np.testing.assert_array_equal(ref[0], average_reference(stack))
    attrs = omezarr.read_attrs(out)
    assert attrs["captures"] == 7 and attrs["derived_from"]["source"] == "x.tif"


def test_reference_zarr_float(tmp_path):
    stack = np.random.default_rng(2).random((4, 6, 5), dtype=np.float32)
    io.write_image(tmp_path / "in.zarr", stack)
    ref = omezarr.open_image(reference_zarr(tmp_path / "in.zarr", tmp_path / "ref.zarr"))
    assert ref.dtype == np.float32
    np.testing.assert_allclose(ref[0, 0, 0], average_reference(stack), rtol=1e-6)


def test_reference_zarr_refuses_non_image(tmp_path):
    with pytest.raises(InputError, match="missing.zarr: no such file"):
        reference_zarr(tmp_path / "missing.zarr", tmp_path / "ref.zarr")
    assert not (tmp_path / "ref.zarr").exists()


@pytest.mark.data
def test_fmd_avg50_reproduced_exactly():
    fov = fmd_fov1()
    files = sorted((fov / "raw" / "1").glob("*.png"), key=lambda f: natural_key(f.name))
    assert len(files) == 50
    stack = np.stack([io.read_image(f) for f in files])
    gt = io.read_image(fov / "gt" / "1" / "avg50.png")
    np.testing.assert_array_equal(average_reference(stack), gt)


@pytest.mark.data
def test_fmd_avg50_reproduced_by_streamed_reference(tmp_path):
    fov = fmd_fov1()
    ingest(fov / "raw" / "1", tmp_path / "raw.zarr")
    ref = omezarr.open_image(reference_zarr(tmp_path / "raw.zarr", tmp_path / "ref.zarr"))
    np.testing.assert_array_equal(ref[0, 0, 0], np.asarray(Image.open(fov / "gt" / "1" / "avg50.png")))
