"""n2sr.io.stream: ingest's threaded copy writes what zarr would, records the same sha256, fails cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from zarr.codecs import ZstdCodec

from n2sr.errors import InputError
from n2sr.io import images, omezarr, parts, stream
from n2sr.steps import ingest as ingest_mod
from n2sr.steps.ingest import ingest


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def stack(shape, dtype=np.uint16, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(dtype)


@pytest.mark.parametrize(("workers", "byteorder", "compression", "codec", "shard_mb", "shards"),
                         [(1, "<", None, "zstd", 0, None), (3, "<", None, "zstd", 0, None),
                          (3, ">", None, "zstd", 0.01, 5), (2, "<", "zlib", "zstd", 64, 37),
                          (2, "<", None, "lz4", 0, None), (1, ">", None, "lz4", 0.01, 5), (3, "<", None, "lz4", 0.01, 5)])
def test_threaded_ingest_is_tifffile_and_zarr_bit_for_bit(tmp_path, monkeypatch, workers, byteorder, compression,
                                                          codec, shard_mb, shards):
    """37 pages (no multiple of the workers, of the planes in flight or of the planes per shard), some
    all zero (zarr stores no chunk for those, and no shard for a shard of them: planes 35-36), little-
    and big-endian, raw and compressed pages, zstd and lz4, one file per plane or shards of 5 or of
    all 37 planes: the array is tifffile's, the sha256 is the file's, and every file of the output
    (metadata, chunks, shards) is what zarr itself writes for the same array, codec and attributes."""
    data = stack((37, 24, 40))
    data[[0, 5, 35, 36]] = 0
    source = tmp_path / "s.tif"
    tifffile.imwrite(source, data, photometric="minisblack", byteorder=byteorder, compression=compression)
    monkeypatch.setattr(stream, "available_cpus", lambda: workers)
    ingest(source, tmp_path / "out.zarr", ingest_mod.IngestConfig(codec=codec, shard_mb=shard_mb))
    np.testing.assert_array_equal(omezarr.open_image(tmp_path / "out.zarr")[:, 0, 0], tifffile.imread(source))
    attrs = omezarr.read_attrs(tmp_path / "out.zarr")
    assert attrs["sha256"] == images.sha256_file(source) == attrs["source_files"][0]["sha256"]
    assert omezarr.open_image(tmp_path / "out.zarr").shards == (None if shards is None else (shards, 1, 1, 24, 40))
    reference = omezarr.create_image(tmp_path / "ref.zarr", data.shape, data.dtype,
                                     attrs={k: v for k, v in attrs.items() if k != "n2sr_version"},
                                     codec=omezarr.compressor(5, codec),
                                     shards=None if shards is None else (shards, 1, 1, 24, 40))
    reference[:, 0, 0] = data  # zarr's own encoding and chunk (shard) files
    assert files_of(tmp_path / "out.zarr") == files_of(tmp_path / "ref.zarr")
    files = {p.relative_to(tmp_path / "out.zarr" / "0" / "c").parts[0] for p in (tmp_path / "out.zarr" / "0" / "c").rglob("*")}
    if shards is None:
        assert "5" not in files  # an all-zero plane has no chunk
    else:
        assert files == {str(i) for i in range(-(-37 // shards))} - ({"7"} if shards == 5 else set())


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
@pytest.mark.parametrize("dtype", [np.uint8, np.dtype(">u2"), np.float32])
def test_chunk_writer_tiles_pads_and_skips_like_zarr(tmp_path, dtype, codec):
    """Planes cut into several chunks with partial edge chunks, an all-zero tile, -0.0 (stored by
    zarr: its bits are not the fill value's), a big-endian source, either codec: same files as zarr's."""
    planes = stack((3, 40, 50), dtype=np.float32 if dtype == np.float32 else np.uint8).astype(dtype)
    planes[1, :16, :16] = 0
    if dtype == np.float32:
        planes[2, :16, 16:32] = -0.0
    ours = omezarr.create_image(tmp_path / "a.zarr", planes.shape, np.dtype(dtype).newbyteorder("="),
                                chunks=(1, 16, 16), codec=omezarr.compressor(5, codec))
    writer = stream.ChunkWriter(tmp_path / "a.zarr", ours)
    assert writer.direct
    stream.copy_planes([((t, 0, 0), lambda t=t: planes[t]) for t in range(3)], writer, workers=2, depth=1)
    theirs = omezarr.create_image(tmp_path / "b.zarr", planes.shape, np.dtype(dtype).newbyteorder("="),
                                  chunks=(1, 16, 16), codec=omezarr.compressor(5, codec))
    theirs[:, 0, 0] = planes
    assert files_of(tmp_path / "a.zarr") == files_of(tmp_path / "b.zarr")
    assert not (tmp_path / "a.zarr" / "0" / "c" / "1" / "0" / "0" / "0" / "0").exists()


def test_other_layouts_go_through_zarr(tmp_path):
    group = zarr.open_group(tmp_path / "z.zarr", mode="w-", zarr_format=3)
    array = group.create_array("0", shape=(2, 1, 1, 8, 8), dtype=np.uint16, chunks=(1, 1, 1, 8, 8),
                               compressors=ZstdCodec())
    writer = stream.ChunkWriter(tmp_path / "z.zarr", array)
    assert not writer.direct
    planes = stack((2, 8, 8))
    stream.copy_planes([((t, 0, 0), lambda t=t: planes[t]) for t in range(2)], writer)
    np.testing.assert_array_equal(array[:, 0, 0], planes)


def test_truncated_imagej_file_is_read_through_tifffiles_store(tmp_path, monkeypatch):
    """One IFD for all planes (ImageJ's > 4 GB layout): no page per plane, so planes come from
    tifffile's Zarr store; same array."""
    data = stack((7, 2, 16, 20), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "t.tif", data, imagej=True, truncate=True, metadata={"axes": "TCYX"})
    read_page = []
    monkeypatch.setattr(ingest_mod, "_read_page", lambda *a: read_page.append(a))
    ingest(tmp_path / "t.tif", tmp_path / "out.zarr")
    assert not read_page
    np.testing.assert_array_equal(omezarr.open_image(tmp_path / "out.zarr")[:, :, 0], data)


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_truncated_stack_names_the_file_and_leaves_nothing(tmp_path, cut):
    """Cut inside the pixel data: the copying threads meet the end of the file; one InputError
    naming it, no output, no temporary, no thread left running."""
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, stack((40, 64, 64)), photometric="minisblack", contiguous=False)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    before = set(threading.enumerate())
    with pytest.raises(InputError) as exc:
        ingest(path, tmp_path / "out.zarr")
    assert str(exc.value).startswith(f"{path}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif"]
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("n2sr-")]


def test_a_failing_plane_stops_the_copy_before_it_returns(tmp_path):
    """The first failure is raised only after every started plane has finished writing."""
    array = omezarr.create_image(tmp_path / "a.zarr", (20, 8, 8), np.uint16)
    writer = stream.ChunkWriter(tmp_path / "a.zarr", array)
    done = []

    def read(t):
        if t == 3:
            raise InputError(tmp_path / "x.tif", "bad page")
        done.append(t)
        return np.full((8, 8), t + 1, np.uint16)

    with pytest.raises(InputError, match="bad page"):
        stream.copy_planes([((t, 0, 0), lambda t=t: read(t)) for t in range(20)], writer, workers=2, depth=2)
    written = {int(p.relative_to(tmp_path / "a.zarr" / "0" / "c").parts[0])
               for p in (tmp_path / "a.zarr" / "0" / "c").rglob("*") if p.is_file()}
    assert written == set(done) and len(done) < 19  # bounded: the rest was never started


def test_ingest_never_imports_torch(tmp_path):
    """Ingest runs on nodes without torch's hundreds of MB: the threaded copy must not pull it in."""
    tifffile.imwrite(tmp_path / "s.tif", stack((3, 8, 8)), photometric="minisblack")
    code = ("import sys; from n2sr.cli import main; "
            f"assert main(['ingest', {str(tmp_path / 's.tif')!r}, {str(tmp_path / 'o.zarr')!r}]) == 0; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_codec_and_clevel_set_the_stored_blosc_settings_and_nothing_else(tmp_path):
    """--codec lz4 / --clevel 1 / --shard-mb 0 change the stored Blosc compressor, level or shards only:
    every output reads back as the source; the default stays zstd 5 bitshuffled."""
    from n2sr.cli import main

    data = stack((5, 16, 24))
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack")
    runs = {"default.zarr": [], "one.zarr": ["--clevel", "1"], "lz4.zarr": ["--codec", "lz4"],
            "plain.zarr": ["--shard-mb", "0"]}
    settings = {}
    for name, options in runs.items():
        assert main(["ingest", str(tmp_path / "s.tif"), str(tmp_path / name), *options]) == 0
        image = omezarr.open_image(tmp_path / name)
        blosc = image.compressors[0].to_dict()["configuration"]
        settings[name] = (blosc["cname"], blosc["clevel"], blosc["shuffle"], image.shards)
        np.testing.assert_array_equal(image[:, 0, 0], data)
    shards = (5, 1, 1, 16, 24)  # the default 64 MiB holds all 5 planes
    assert settings == {"default.zarr": ("zstd", 5, "bitshuffle", shards), "one.zarr": ("zstd", 1, "bitshuffle", shards),
                        "lz4.zarr": ("lz4", 5, "bitshuffle", shards), "plain.zarr": ("zstd", 5, "bitshuffle", None)}
    with pytest.raises(ValueError, match="clevel"):
        ingest(tmp_path / "s.tif", tmp_path / "bad.zarr", ingest_mod.IngestConfig(clevel=10))
    with pytest.raises(ValueError, match="codec"):
        ingest(tmp_path / "s.tif", tmp_path / "bad.zarr", ingest_mod.IngestConfig(codec="gzip"))
    with pytest.raises(ValueError, match="shard_mb"):
        ingest(tmp_path / "s.tif", tmp_path / "bad.zarr", ingest_mod.IngestConfig(shard_mb=-1))
    assert not (tmp_path / "bad.zarr").exists()


def test_shards_run_along_the_innermost_long_axis_and_are_written_whole(tmp_path):
    """z-stacks of 2 time points, shards of 4 planes along z: the units a scattered ingest may not
    split restart at every t; a copy that leaves a shard short raises and writes no file for it."""
    shape = (2, 1, 11, 24, 40)
    shards = omezarr.plane_shards(shape, np.uint16, 4 * 24 * 40 * 2 / 2**20)
    assert shards == (1, 1, 4, 24, 40)
    assert parts.plane_units(shape, shards) == [(0, 4), (4, 8), (8, 11), (11, 15), (15, 19), (19, 22)]
    assert parts.plane_runs(shape, shards, 4) == [(0, 4), (4, 11), (11, 15), (15, 22)]
    assert omezarr.plane_shards((3, 1, 1, 4096, 4096), np.uint16, 64) is None  # tiled planes: no shards
    array = omezarr.create_image(tmp_path / "a.zarr", shape, np.uint16, shards=shards)
    writer = stream.ChunkWriter(tmp_path / "a.zarr", array)
    planes = stack(shape)
    with pytest.raises(ValueError, match=r"shards \[\(0, 0, 1, 0, 0\)\] got only some"):
        stream.copy_planes([((0, 0, z), lambda z=z: planes[0, 0, z]) for z in range(6)], writer)
    assert sorted(p.relative_to(tmp_path / "a.zarr" / "0").as_posix() for p in (tmp_path / "a.zarr" / "0").rglob("*")
                  if p.is_file()) == ["c/0/0/0/0/0", "zarr.json"]
