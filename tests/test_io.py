"""n2sr.io: readers refuse bad files with the file's name, writers are atomic."""

from __future__ import annotations

import hashlib
import os
import json

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from n2sr.io import images
from n2sr.io import omezarr
from n2sr.io.atomic import atomic_path
from n2sr.errors import InputError


def leftovers(path):
    """Temp or stale siblings that an atomic write must not leave behind."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def assert_names(exc_info, path, *words):
    message = str(exc_info.value)
    assert message.startswith(str(path) + ": "), message
    for word in words:
        assert word.lower() in message.lower(), message


# --- reading -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_read_png_grayscale_round_trip(tmp_path, dtype):
    plane = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, (17, 23), dtype=dtype)
    Image.fromarray(plane).save(tmp_path / "a.png")
    out = images.read_image(tmp_path / "a.png")
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, plane)


def test_read_tiff_moves_plane_last_and_drops_single_sample(tmp_path):
    stack = np.arange(3 * 5 * 4, dtype=np.uint16).reshape(3, 5, 4, 1)
    tifffile.imwrite(tmp_path / "a.tif", stack, metadata={"axes": "QYXS"})
    out = images.read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(out, stack[..., 0])
    assert images.image_info(tmp_path / "a.tif") == ((3, 5, 4), np.dtype(np.uint16))


def test_read_plain_zarr_array(tmp_path):
    data = np.arange(30, dtype=np.float32).reshape(5, 6)
    zarr.create_array(store=str(tmp_path / "p.zarr"), data=data)
    np.testing.assert_array_equal(images.read_image(tmp_path / "p.zarr"), data)


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as exc:
        images.read_image(tmp_path / "nope.tif")
    assert_names(exc, tmp_path / "nope.tif", "no such file")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.tif"
    path.touch()
    with pytest.raises(InputError) as exc:
        images.read_image(path)
    assert_names(exc, path, "empty", "0 bytes")


def test_truncated_tiff(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.ones((4, 64, 64), np.uint16), photometric="minisblack")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as exc:
        images.read_image(path)
    assert_names(exc, path, "truncated")


def test_text_file_named_tif(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("exposure 100 ms\n")
    with pytest.raises(InputError) as exc:
        images.read_image(path)
    assert_names(exc, path, "not a TIFF")


def test_rgb_png_refused(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    with pytest.raises(InputError) as exc:
        images.read_image(path)
    assert_names(exc, path, "RGB", "grayscale")
    with pytest.raises(InputError):
        images.image_info(path)


def test_rgb_tiff_refused(tmp_path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((2, 8, 8, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError) as exc:
        images.read_image(path)
    assert_names(exc, path, "3 samples per pixel (RGB)", "grayscale")


def test_nan_float_tiff(tmp_path):
    path = tmp_path / "nan.tif"
    plane = np.ones((8, 8), np.float32)
    plane[3, 4] = np.nan
    plane[0, 0] = np.inf
    tifffile.imwrite(path, plane)
    with pytest.raises(InputError) as exc:
        images.read_image(path)
    assert_names(exc, path, "2 NaN/Inf")


def test_unknown_extension(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"\xff\xd8")
    with pytest.raises(InputError) as exc:
        images.read_image(path)
    assert_names(exc, path, "unknown image format")


# --- writing -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(9, 7), (3, 9, 7)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])  # ImageJ and plain TIFF
def test_write_tiff_round_trip(tmp_path, shape, dtype):
    arr = (np.random.default_rng(1).random(shape) * 1000).astype(dtype)
    images.write_image(tmp_path / "o.tif", arr)
    np.testing.assert_array_equal(images.read_image(tmp_path / "o.tif"), arr)
    assert leftovers(tmp_path / "o.tif") == []


def test_write_tiff_is_imagej_hyperstack_with_attrs(tmp_path):
    arr = np.arange(2 * 3 * 4 * 5 * 6, dtype=np.uint16).reshape(2, 3, 4, 5, 6)  # t c z y x
    images.write_image(tmp_path / "o.tif", arr, attrs={"model": "m.pt"})
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert tif.is_imagej
        assert tif.series[0].axes == "TZCYX"
        assert json.loads(tif.imagej_metadata["Info"]) == {"model": "m.pt"}
        np.testing.assert_array_equal(tif.asarray(), arr.transpose(0, 2, 1, 3, 4))


def test_write_zarr_round_trip_and_replaces_stale_target(tmp_path):
    path = tmp_path / "o.zarr"
    images.write_image(path, np.zeros((4, 5, 6), np.uint8))
    arr = np.arange(30, dtype=np.uint16).reshape(5, 6)
    images.write_image(path, arr, attrs={"step": "test"})
    back = images.read_image(path)
    assert back.shape == (1, 1, 1, 5, 6)
    np.testing.assert_array_equal(back[0, 0, 0], arr)
    assert omezarr.read_attrs(path)["step"] == "test"
    assert leftovers(path) == []


def test_write_tiff_failure_leaves_no_target(tmp_path, monkeypatch):
    path = tmp_path / "o.tif"

    def half_write(target, data, **kwargs):
        target.write_bytes(b"II*\x00partial")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", half_write)
    with pytest.raises(OSError, match="disk full"):
        images.write_image(path, np.zeros((4, 4), np.uint8))
    assert not path.exists()
    assert leftovers(path) == []


def test_write_zarr_failure_keeps_previous_output(tmp_path, monkeypatch):
    path = tmp_path / "o.zarr"
    images.write_image(path, np.full((4, 4), 7, np.uint8))

    def broken_setitem(self, key, value):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(zarr.Array, "__setitem__", broken_setitem)
    with pytest.raises(RuntimeError, match="killed"):
        images.write_image(path, np.zeros((4, 4), np.uint8))
    monkeypatch.undo()
    assert (images.read_image(path) == 7).all()
    assert leftovers(path) == []


def test_sync_tree_fsyncs_every_file_and_folder_once(tmp_path, monkeypatch):
    """The fsyncs run on several threads, but none of the tree is left out or done twice, and a
    failing one is raised."""
    from n2sr.io import atomic

    tree = tmp_path / "t.zarr"
    for t in range(12):
        (tree / "c" / str(t) / "0").mkdir(parents=True)
        (tree / "c" / str(t) / "0" / "0").write_bytes(b"x")
    (tree / "zarr.json").write_text("{}")
    synced = []
    monkeypatch.setattr(atomic, "fsync_path", synced.append)
    atomic.sync_tree(tree)
    assert sorted(synced) == sorted([tree, *tree.rglob("*")])
    atomic.sync_tree(tree / "zarr.json")
    assert synced[-1] == tree / "zarr.json"

    def failing(path):
        if path.name == "7":
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic, "fsync_path", failing)
    with pytest.raises(OSError, match="Input/output"):
        atomic.sync_tree(tree)


def test_atomic_path_requires_output(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "never.tif"):
            pass
    assert not (tmp_path / "never.tif").exists()


def test_atomic_path_removes_only_temporaries_of_dead_writers(tmp_path, monkeypatch):
    """A SIGKILLed job's temporaries of the same output go with the next write; a live writer's,
    another host's recent ones and other outputs' are left alone."""
    from n2sr.io import atomic

    host = atomic._host()
    target = tmp_path / "out.zarr"
    dead = tmp_path / f".out.zarr.tmp-{host}-999991-abcd1234"
    (dead / "0").mkdir(parents=True)
    (dead / "0" / "chunk").write_bytes(b"torn")
    (tmp_path / f".out.zarr.old-{host}-999992-abcd1234").write_text("stale")
    live = tmp_path / f".out.zarr.tmp-{host}-{os.getppid()}-abcd1234"  # a running process
    remote = tmp_path / ".out.zarr.tmp-othernode-999991-abcd1234"  # cannot tell: kept until stale
    others = [live.name, remote.name, f".other.zarr.tmp-{host}-999991-abcd1234", ".out.zarr.tmp-notapid",
              "out.zarr.tmp-999994"]
    for name in others:
        (tmp_path / name).write_text("keep")
    with atomic_path(target) as tmp:
        assert host in tmp.name and str(os.getpid()) in tmp.name
        tmp.mkdir()
        (tmp / "data").write_text("new")
    assert (target / "data").read_text() == "new"
    assert all((tmp_path / name).read_text() == "keep" for name in others)
    assert not dead.exists() and not (tmp_path / f".out.zarr.old-{host}-999992-abcd1234").exists()
    old = atomic.STALE_SECONDS + 10
    os.utime(remote, (remote.stat().st_atime - old, remote.stat().st_mtime - old))
    assert atomic.sweep_stale(target) == [remote]


def test_sha256_file_streams(tmp_path):
    data = np.random.default_rng(2).bytes(10_000)
    (tmp_path / "b.bin").write_bytes(data)
    assert images.sha256_file(tmp_path / "b.bin", block_size=1000) == hashlib.sha256(data).hexdigest()
