"""Multiscale OME-Zarr levels (`n2sr.io.pyramid`): each level the 2x2 mean of the one above,
down to the configured side, recorded in NGFF metadata that the viewers' reader (`ome-zarr`)
and the NGFF JSON schema accept."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from n2sr.io import omezarr
from test_ingest import ngff_validator
from n2sr.io.pyramid import add_levels, levels_needed


def halve(plane: np.ndarray) -> np.ndarray:
    """2x2 means, an odd side repeating its last row/column, in float64."""
    p = np.pad(plane.astype(np.float64), [(0, 0)] * (plane.ndim - 2) + [(0, plane.shape[-2] % 2),
                                                                         (0, plane.shape[-1] % 2)], mode="edge")
    return p.reshape(*p.shape[:-2], p.shape[-2] // 2, 2, p.shape[-1] // 2, 2).mean(axis=(-3, -1))


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_levels_are_two_by_two_means_down_to_the_side(tmp_path, dtype):
    rng = np.random.default_rng(0)
    data = (rng.random((2, 1, 1, 301, 170)) * 4000).astype(dtype)
    path = tmp_path / "img.zarr"
    # chunks smaller than the plane and odd: levels are computed chunk by chunk
    omezarr.create_image(path, data.shape, data.dtype, chunks=(1, 1, 1, 77, 45))[...] = data
    assert add_levels(path, 64) == levels_needed(data.shape, 64) == 3  # 301 -> 151 -> 76 -> 38
    group = zarr.open_group(path, mode="r")
    expected = data
    for level in (1, 2, 3):
        mean = halve(expected)
        expected = (np.floor(mean + 0.5) if np.issubdtype(dtype, np.integer) else mean).astype(dtype)
        got = group[str(level)][...]
        assert got.dtype == dtype and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == np.float32 else 0)
    assert group["3"].shape[-2:] == (38, 22)
    datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1", "2", "3"]
    assert datasets[2]["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.0, 1.0, 1.0, 4.0, 4.0]},
        {"type": "translation", "translation": [0.0, 0.0, 0.0, 1.5, 1.5]}]
    np.testing.assert_array_equal(omezarr.open_image(path)[...], data)  # readers of level 0 unchanged
    ngff_validator().validate(dict(group.attrs))  # the NGFF 0.5 image schema


def test_small_images_get_no_levels_and_zero_turns_them_off(tmp_path):
    path = tmp_path / "img.zarr"
    omezarr.create_image(path, (64, 64), np.uint8)[...] = 1
    assert add_levels(path, 64) == 0 and add_levels(path, 0) == 0
    assert list(zarr.open_group(path, mode="r").array_keys()) == ["0"]


def test_the_viewers_reader_opens_every_level(tmp_path):
    """ome-zarr-py, the reader napari's plugin uses, sees one multiscale image with every level."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    path = tmp_path / "img.zarr"
    data = np.arange(3 * 200 * 130, dtype=np.uint16).reshape(3, 200, 130)
    omezarr.create_image(path, data.shape, data.dtype)[...] = data.reshape(3, 1, 1, 200, 130)
    add_levels(path, 50)
    nodes = list(Reader(parse_url(str(path)))())
    image = nodes[0]
    assert any(isinstance(spec, Multiscales) for spec in image.specs)
    assert [tuple(level.shape) for level in image.data] == [(3, 1, 1, 200, 130), (3, 1, 1, 100, 65),
                                                            (3, 1, 1, 50, 33)]
    np.testing.assert_array_equal(np.asarray(image.data[2]), zarr.open_group(path, mode="r")["2"][...])
    assert [a["name"] for a in image.metadata["axes"]] == ["t", "c", "z", "y", "x"]
