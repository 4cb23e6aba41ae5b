"""n2sr.ingest and n2sr.omezarr: every source layout lands in the same t c z y x OME-Zarr."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image
from referencing import Registry, Resource

from n2sr.io import images, omezarr, stream
from n2sr.steps import ingest as ingest_mod
from n2sr.steps.ingest import ingest, natural_key
from n2sr.errors import InputError

NGFF_DIR = Path(__file__).parent / "data" / "ngff"
NGFF_BASE = "https://ngff.openmicroscopy.org/0.5/schemas/"
FMD_FOV = Path("fmd") / "Confocal_BPAE_B" / "raw" / "1"


def data_root() -> Path:
    return Path(os.environ.get("N2SR_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def random_stack(shape, dtype=np.uint16, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(dtype)


def ingested(source, tmp_path):
    out = ingest(source, tmp_path / "out.zarr")
    assert out == tmp_path / "out.zarr"
    return omezarr.open_image(out)


def assert_no_output(tmp_path):
    assert not any(p.name.endswith(".zarr") or ".zarr." in p.name for p in tmp_path.iterdir())


# --- layouts -------------------------------------------------------------------------

def test_multipage_tiff_goes_on_t_with_provenance(tmp_path):
    stack = random_stack((6, 20, 30))
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    arr = ingested(tmp_path / "s.tif", tmp_path)
    assert arr.shape == (6, 1, 1, 20, 30)
    assert arr.chunks == (1, 1, 1, 20, 30)
    np.testing.assert_array_equal(arr[:, 0, 0], stack)
    attrs = omezarr.read_attrs(tmp_path / "out.zarr")
    assert attrs["sha256"] == images.sha256_file(tmp_path / "s.tif")
    assert attrs["source_dtype"] == "uint16"
    assert attrs["source"] == str((tmp_path / "s.tif").resolve())


@pytest.mark.parametrize("axes", ["TCZYX", "ZTCYX", "CZTYX"])
def test_ome_tiff(tmp_path, axes):
    stack = random_stack((2, 3, 4, 10, 12))
    tifffile.imwrite(tmp_path / "s.ome.tif", stack, ome=True, metadata={"axes": axes})
    expected = stack.transpose([axes.index(a) for a in "TCZYX"])
    np.testing.assert_array_equal(ingested(tmp_path / "s.ome.tif", tmp_path)[...], expected)


def test_imagej_hyperstack(tmp_path):
    tzcyx = random_stack((2, 4, 3, 10, 12), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "h.tif", tzcyx, imagej=True, metadata={"axes": "TZCYX"})
    arr = ingested(tmp_path / "h.tif", tmp_path)
    np.testing.assert_array_equal(arr[...], tzcyx.transpose(0, 2, 1, 3, 4))
    assert omezarr.read_attrs(tmp_path / "out.zarr")["source_axes"] == "TZCYX"


def test_float_tiff_keeps_dtype(tmp_path):
    stack = np.random.default_rng(3).random((3, 8, 9), dtype=np.float32)
    tifffile.imwrite(tmp_path / "f.tif", stack, photometric="minisblack")
    arr = ingested(tmp_path / "f.tif", tmp_path)
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr[:, 0, 0], stack)


def test_png_series_folder_natural_order(tmp_path):
    folder = tmp_path / "fov"
    folder.mkdir()
    for i in (1, 2, 10, 11):  # lexical order would put 10 and 11 before 2
        Image.fromarray(np.full((5, 7), i, np.uint8)).save(folder / f"cap{i}.png")
    (folder / "notes.txt").write_text("ignored")
    arr = ingested(folder, tmp_path)
    assert arr.shape == (4, 1, 1, 5, 7)
    assert [int(arr[t, 0, 0, 0, 0]) for t in range(4)] == [1, 2, 10, 11]
    attrs = omezarr.read_attrs(tmp_path / "out.zarr")
    sums = [images.sha256_file(folder / f"cap{i}.png") for i in (1, 2, 10, 11)]
    assert [Path(f["path"]).name for f in attrs["source_files"]] == ["cap1.png", "cap2.png", "cap10.png", "cap11.png"]
    assert attrs["sha256"] == hashlib.sha256("\n".join(sorted(sums)).encode()).hexdigest()


def test_single_png(tmp_path):
    plane = random_stack((6, 9), dtype=np.uint16)
    Image.fromarray(plane).save(tmp_path / "p.png")
    arr = ingested(tmp_path / "p.png", tmp_path)
    np.testing.assert_array_equal(arr[0, 0, 0], plane)
    assert omezarr.read_attrs(tmp_path / "out.zarr")["sha256"] == images.sha256_file(tmp_path / "p.png")


@pytest.mark.data
def test_real_fmd_folder(tmp_path):
    folder = data_root() / FMD_FOV
    if not folder.is_dir():
        pytest.skip(f"FMD data not found at {folder}; set N2SR_DATA to the shared data root")
    files = sorted(folder.glob("*.png"), key=lambda f: natural_key(f.name))
    arr = ingested(folder, tmp_path)
    assert arr.shape == (50, 1, 1, 512, 512) and arr.dtype == np.uint8
    for t in (0, 17, 49):
        np.testing.assert_array_equal(arr[t, 0, 0], np.asarray(Image.open(files[t])))


# --- metadata ------------------------------------------------------------------------

def ngff_validator() -> jsonschema.Draft202012Validator:
    """Validator for the vendored NGFF 0.5 image schema, with `$ref`s resolved offline."""
    schemas = {name: json.loads((NGFF_DIR / name).read_text()) for name in ("image.schema", "_version.schema")}
    registry = Registry().with_resources(
        (NGFF_BASE + name, Resource.from_contents(schema)) for name, schema in schemas.items()
    )
    return jsonschema.Draft202012Validator(schemas["image.schema"], registry=registry)


def test_ngff_metadata_validates_against_schema(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", random_stack((2, 8, 8)), photometric="minisblack")
    ingest(tmp_path / "s.tif", tmp_path / "out.zarr")
    meta = json.loads((tmp_path / "out.zarr" / "zarr.json").read_text())
    validator = ngff_validator()
    validator.validate(meta["attributes"])
    array_meta = json.loads((tmp_path / "out.zarr" / "0" / "zarr.json").read_text())
    assert array_meta["dimension_names"] == ["t", "c", "z", "y", "x"]
    assert "blosc" in json.dumps(array_meta["codecs"]) and "zstd" in json.dumps(array_meta["codecs"])
    # the validator is not vacuous: a wrong version and a missing space axis fail
    meta["attributes"]["ome"]["version"] = "0.4"
    assert not validator.is_valid(meta["attributes"])


def test_ngff_units_and_scale_validate():
    attrs = {"ome": omezarr.ngff_attributes(scale=[1, 1, 0.5, 0.1, 0.1], units={"y": "micrometer"})}
    ngff_validator().validate(attrs)
    bad = {"ome": {**attrs["ome"], "multiscales": [{**attrs["ome"]["multiscales"][0], "axes": []}]}}
    assert not ngff_validator().is_valid(bad)


def test_chunks_are_planes_capped_at_2048():
    assert omezarr.plane_chunks((7, 512, 512)) == (1, 1, 1, 512, 512)
    assert omezarr.plane_chunks((3, 1, 2, 5000, 300)) == (1, 1, 1, 2048, 300)


# --- axis mapping ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("axes", "shape", "expected"),
    [
        ("YX", (4, 5), (1, 1, 1, 4, 5)),
        ("QYX", (3, 4, 5), (3, 1, 1, 4, 5)),
        ("IYX", (3, 4, 5), (3, 1, 1, 4, 5)),
        ("ZCYX", (2, 3, 4, 5), (1, 3, 2, 4, 5)),
        ("QTYX", (2, 3, 4, 5), (6, 1, 1, 4, 5)),
        ("YXS", (4, 5, 1), (1, 1, 1, 4, 5)),
    ],
)
def test_to_tczyx_shapes(axes, shape, expected):
    arr = np.arange(int(np.prod(shape))).reshape(shape)
    assert omezarr.to_tczyx(arr, axes).shape == expected


def test_to_tczyx_values_and_refusals():
    arr = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # Z C Y X
    np.testing.assert_array_equal(omezarr.to_tczyx(arr, "ZCYX")[0], arr.transpose(1, 0, 2, 3))
    with pytest.raises(ValueError, match="samples"):
        omezarr.to_tczyx(np.zeros((4, 5, 3)), "YXS")
    with pytest.raises(ValueError, match="Y and one X"):
        omezarr.to_tczyx(np.zeros((4, 5)), "QX")


# --- streaming -----------------------------------------------------------------------

def peak_memory_of_ingest(source: Path, out: Path) -> int:
    tracemalloc.start()
    try:
        ingest(source, out, ingest_mod.IngestConfig(shard_mb=0.25))  # shards of 8 pages: held until whole
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_stack_is_streamed_page_by_page(tmp_path, monkeypatch):
    """Memory must not grow with the number of pages (only with the shard size), and no whole-stack
    reader is called."""
    page = (64, 256)  # 32 KiB as uint16
    # both above the 1 MiB sha256 block, so hashing costs the same for both
    small, big = random_stack((40, *page)), random_stack((160, *page))
    tifffile.imwrite(tmp_path / "small.tif", small, photometric="minisblack")
    tifffile.imwrite(tmp_path / "big.tif", big, photometric="minisblack")

    def whole_file_read(*args, **kwargs):
        raise AssertionError("ingest read the whole stack at once")

    monkeypatch.setattr(tifffile, "imread", whole_file_read)
    monkeypatch.setattr(tifffile.TiffFile, "asarray", whole_file_read)
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", whole_file_read)
    monkeypatch.setattr(ingest_mod, "read_image", whole_file_read)
    peak_small = peak_memory_of_ingest(tmp_path / "small.tif", tmp_path / "small.zarr")
    peak_big = peak_memory_of_ingest(tmp_path / "big.tif", tmp_path / "big.zarr")
    assert peak_big - peak_small < 8 * small[0].nbytes, (peak_small, peak_big, big.nbytes)
    np.testing.assert_array_equal(omezarr.open_image(tmp_path / "big.zarr")[:, 0, 0], big)


# --- bad inputs ----------------------------------------------------------------------

def test_folder_with_mismatched_shape_names_odd_file(tmp_path):
    folder = tmp_path / "fov"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / f"c{i}.png")
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(folder / "c3.png")
    with pytest.raises(InputError) as exc:
        ingest(folder, tmp_path / "out.zarr")
    assert str(exc.value).startswith(str(folder / "c3.png") + ": ")
    assert "c0.png" in str(exc.value)
    assert_no_output(tmp_path)


def test_folder_with_mismatched_dtype_names_odd_file(tmp_path):
    folder = tmp_path / "fov"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a1.png")
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(folder / "a2.png")
    with pytest.raises(InputError, match="a2.png: .*uint16"):
        ingest(folder, tmp_path / "out.zarr")


def test_folder_refuses_stack_files_and_empty_folders(tmp_path):
    folder = tmp_path / "fov"
    folder.mkdir()
    with pytest.raises(InputError, match="no .png"):
        ingest(folder, tmp_path / "out.zarr")
    tifffile.imwrite(folder / "s.tif", np.zeros((2, 8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match="s.tif: is a stack of 2 planes"):
        ingest(folder, tmp_path / "out.zarr")


def test_truncated_stack_leaves_no_output(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, random_stack((8, 64, 64)), photometric="minisblack")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as exc:
        ingest(path, tmp_path / "out.zarr")
    assert str(exc.value).startswith(f"{path}: ")
    assert_no_output(tmp_path)


def test_nan_in_stack_names_file(tmp_path):
    stack = np.zeros((3, 8, 8), np.float32)
    stack[2, 1, 1] = np.nan
    tifffile.imwrite(tmp_path / "n.tif", stack, photometric="minisblack")
    with pytest.raises(InputError, match="n.tif: contains 1 NaN/Inf"):
        ingest(tmp_path / "n.tif", tmp_path / "out.zarr")
    assert_no_output(tmp_path)


@pytest.mark.parametrize("name", ["rgb.tif", "rgb.png"])
def test_rgb_sources_refused(tmp_path, name):
    rgb = np.zeros((8, 8, 3), np.uint8)
    if name.endswith(".tif"):
        tifffile.imwrite(tmp_path / name, rgb, photometric="rgb")
    else:
        Image.fromarray(rgb).save(tmp_path / name)
    with pytest.raises(InputError, match=f"{name}: .*grayscale"):
        ingest(tmp_path / name, tmp_path / "out.zarr")


def test_zero_byte_and_text_sources(tmp_path):
    (tmp_path / "empty.tif").touch()
    (tmp_path / "text.tif").write_text("not an image")
    with pytest.raises(InputError, match="empty.tif: file is empty"):
        ingest(tmp_path / "empty.tif", tmp_path / "out.zarr")
    with pytest.raises(InputError, match="text.tif: .*not a TIFF"):
        ingest(tmp_path / "text.tif", tmp_path / "out.zarr")
    assert_no_output(tmp_path)


def test_output_failure_is_not_blamed_on_input_and_leaves_nothing(tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "s.tif", random_stack((3, 8, 8)), photometric="minisblack")
    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zarr.Array, "__setitem__", disk_full)
    monkeypatch.setattr(stream, "put", disk_full)  # n2sr's own layout: chunk files written by n2sr.io.stream
    with pytest.raises(OSError, match="No space") as exc:
        ingest(tmp_path / "s.tif", tmp_path / "out.zarr")
    assert not isinstance(exc.value, InputError)
    assert_no_output(tmp_path)


def test_a_raw_file_changed_after_ingest_stops_later_steps(tmp_path):
    """Same size but new content (mtime moved): sha256 differs -> one line; a new size -> one line;
    the raw file gone (archived) -> the ingested copy is used."""
    from n2sr.io.planes import select

    raw = tmp_path / "raw.tif"
    data = np.arange(2 * 32 * 32, dtype=np.uint16).reshape(2, 32, 32)
    tifffile.imwrite(raw, data, photometric="minisblack")
    ingest(raw, tmp_path / "a.zarr")
    assert select(tmp_path / "a.zarr").read().shape[0] == 2
    os.utime(raw, ns=(raw.stat().st_atime_ns, raw.stat().st_mtime_ns + 10**9))  # touched, same bytes
    select(tmp_path / "a.zarr")
    tifffile.imwrite(raw, data[::-1].copy(), photometric="minisblack")  # same size, other content
    with pytest.raises(InputError, match=r"raw.tif: changed after it was ingested into .*a.zarr \(its content"):
        select(tmp_path / "a.zarr")
    tifffile.imwrite(raw, data[:1], photometric="minisblack")
    with pytest.raises(InputError, match="its size went from"):
        select(tmp_path / "a.zarr")
    raw.unlink()
    assert select(tmp_path / "a.zarr").read().shape[0] == 2
