"""Scatter/gather of one stack over K jobs (`n2sr denoise/evaluate --part`, `n2sr.io.parts`):
K = 1 and K = 4 give the same bytes, the output appears only after every part, and parts whose
boundaries would not match the prepared outputs are refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from n2sr.cli import main
from n2sr.io import omezarr, parts

TINY = ["--iterations", "2", "--batch-size", "2", "--patch-size", "32", "--features", "8", "--final-features", "16",
        "--unet-out-channels", "8", "--sr-channels", "8", "--val-every", "1", "--precision", "fp32", "--device", "cpu"]
# block_size 111: two 64x96 planes per block (111**2 // (64 * 96) = 2), so a part boundary inside
# a block would change which planes share a forward pass (oneDNN's results depend on the batch).
# pyramid 32: multiscale levels, written by the gather of a scattered job (64x96 -> 32x48 -> 16x24).
DENOISE = ["--block-size", "111", "--precision", "fp32", "--device", "cpu", "--pyramid", "32"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    """A trained tiny model, an ingested 8-capture stack and its reference."""
    d = tmp_path_factory.mktemp("parts")
    rng = np.random.default_rng(0)
    clean = (100 + 60 * np.sin(np.arange(64)[:, None] / 6.0) * np.cos(np.arange(96) / 5.0)).astype(np.uint16)
    tifffile.imwrite(d / "noisy.tif", rng.poisson(clean, size=(8, 64, 96)).astype(np.uint16))
    tifffile.imwrite(d / "ref.tif", clean)
    assert main(["train", str(d / "noisy.tif"), "--out", str(d / "m.pt"), *TINY]) == 0
    assert main(["ingest", str(d / "noisy.tif"), str(d / "noisy.zarr")]) == 0
    return d


def denoise(d: Path, out: str, *extra: str) -> int:
    return main(["denoise", str(d / "m.pt"), str(d / "noisy.zarr"), str(d / f"{out}.zarr"), "--sr",
                 str(d / f"{out}.sr.zarr"), "--tiff", str(d / f"{out}.tif"), *DENOISE, *extra])


def chunk_files(zarr: Path) -> dict[str, bytes]:
    """The stored chunks of every array (every multiscale level; metadata aside), by key."""
    return {p.relative_to(zarr).as_posix(): p.read_bytes() for p in sorted(zarr.rglob("*"))
            if p.is_file() and p.name != "zarr.json"}


def test_four_parts_give_the_bytes_of_one_job(stack):
    d = stack
    assert denoise(d, "one") == 0
    assert parts.denoise_count(d / "noisy.zarr", None, part_size=8 * 64 * 96 // 4, block_size=111, sr=True) == 4
    assert denoise(d, "four", "--part", "prepare/4") == 0
    for k in (3, 1, 4):  # any order, each a separate job
        assert denoise(d, "four", "--part", f"{k}/4") == 0
    assert not (d / "four.zarr").exists()
    assert denoise(d, "four", "--part", "gather/4") == 1  # part 2 missing: nothing is published
    assert not (d / "four.zarr").exists() and not (d / "four.sr.zarr").exists() and not (d / "four.tif").exists()
    assert denoise(d, "four", "--part", "2/4") == 0
    assert denoise(d, "four", "--part", "gather/4") == 0
    for name in ("", ".sr"):
        one, four = d / f"one{name}.zarr", d / f"four{name}.zarr"
        np.testing.assert_array_equal(omezarr.open_image(one)[...], omezarr.open_image(four)[...])
        assert chunk_files(one) == chunk_files(four) != {}, name  # the same compressed bytes, chunk by chunk
        levels = [d["path"] for d in zarr.open_group(four, mode="r").attrs["ome"]["multiscales"][0]["datasets"]]
        assert levels == (["0", "1", "2"] if name == "" else ["0", "1", "2", "3"]), levels
    np.testing.assert_array_equal(tifffile.imread(d / "one.tif"), tifffile.imread(d / "four.tif"))
    attrs, single = omezarr.read_attrs(d / "four.zarr"), omezarr.read_attrs(d / "one.zarr")
    assert [r["blocks"] for r in attrs["parts"]] == [[0, 1], [1, 2], [2, 3], [3, 4]]
    # the gather job computes the reference-free estimates of the whole output, as one job does
    assert "estimates" in single and {k: v for k, v in attrs.items() if k != "parts"} == single
    assert not parts.folder(d / "four.zarr").exists()  # gather leaves nothing behind

    ref = ["evaluate", "--reference", str(d / "ref.tif"), str(d / "one.zarr"), "--data-range", "255"]
    assert main([*ref, "--csv", str(d / "one.csv")]) == 0
    assert parts.evaluate_count(d / "one.zarr", None, part_size=8 * 64 * 96 // 4) == 4
    for k in (2, 4, 1, 3):
        assert main([*ref, "--csv", str(d / "four.csv"), "--part", f"{k}/4"]) == 0
    assert main([*ref, "--csv", str(d / "four.csv"), "--part", "gather/4"]) == 0
    assert (d / "four.csv").read_bytes() == (d / "one.csv").read_bytes()
    assert len((d / "one.csv").read_text().splitlines()) == 9


def test_misaligned_parts_are_refused_before_anything_is_written(stack, capsys):
    d = stack
    assert denoise(d, "bad", "--part", "prepare/5") == 1  # 4 blocks of 2 planes: a part would be empty
    assert "a part would be empty" in capsys.readouterr().err
    assert not parts.folder(d / "bad.zarr").exists()
    assert denoise(d, "bad", "--part", "1/2") == 1  # not prepared
    assert "run --part prepare/2 first" in capsys.readouterr().err
    assert denoise(d, "bad", "--part", "prepare/2") == 0
    prepared = parts.partial(d / "bad.zarr", d / "bad.zarr")
    plan = json.loads(Path(parts.marker(d / "bad.zarr", "prepare", 2)).read_text())
    assert plan["blocks"] == 4 and plan["count"] == 2
    # block_size 64: one plane per block, so part 1 of 2 would be planes 0-3, not blocks 0-1 (planes 0-3 too,
    # but cut differently): refused, before a chunk is written
    assert denoise(d, "bad", "--part", "1/2", "--block-size", "64") == 1
    assert "other block boundaries" in capsys.readouterr().err
    assert denoise(d, "bad", "--part", "1/3") == 1
    assert "prepared for 2 parts, not 3" in capsys.readouterr().err
    assert chunk_files(prepared) == {} and not Path(parts.marker(d / "bad.zarr", 1, 2)).exists()


def test_stage_syntax():
    assert parts.parse("prepare/3") == parts.Stage("prepare", 3)
    assert parts.parse("2/3") == parts.Stage("part", 3, 2) and str(parts.parse("2/3")) == "2/3"
    for bad in ("0/3", "4/3", "2", "gather/0", "a/b"):
        with pytest.raises(ValueError, match="--part"):
            parts.parse(bad)
    assert parts.split(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert parts.count(100, 3, 10) == 3 and parts.count(100, 50, 30) == 4 and parts.count(100, 50, None) == 1


def test_a_part_syncs_its_own_chunks_only(tmp_path, monkeypatch):
    """Before its marker, a part fsyncs the chunk files it wrote (a node crash cannot leave a marker
    without its data), and none of another part's (K parts would sync the whole stack K times)."""
    from n2sr.io.blocks import block_grid

    shape = (3, 1, 1, 64, 64)
    dst = omezarr.create_image(tmp_path / "a.zarr", shape, np.float32)
    sr = omezarr.create_image(tmp_path / "sr.zarr", (3, 1, 1, 128, 128), np.float32, chunks=(1, 1, 1, 64, 64))
    dst[...], sr[...] = 1.0, 1.0
    blocks = block_grid(shape, [(dst.chunks, 1), (sr.chunks, 2)], 64)
    assert len(blocks) == 3
    synced = []
    monkeypatch.setattr(parts, "fsync_path", lambda p: synced.append(p.relative_to(tmp_path).as_posix()))
    parts.sync_blocks(tmp_path / "a.zarr", dst, blocks[1:2])
    assert synced == ["a.zarr/0/c/1/0/0/0/0", "a.zarr/0/c/1/0/0/0"]
    synced.clear()
    parts.sync_blocks(tmp_path / "sr.zarr", sr, blocks[2:3], scale=2)  # 2x: four 64x64 chunks per plane
    assert sorted(synced) == sorted([f"sr.zarr/0/c/2/0/0/{i}/{j}" for i in (0, 1) for j in (0, 1)]
                                    + ["sr.zarr/0/c/2/0/0/0", "sr.zarr/0/c/2/0/0/1"])


def test_a_single_plane_is_scattered_by_regions(stack):
    """One plane stored in 32x32 chunks: parts are runs of plane regions, and K = 4 still gives
    the bytes of one job (each region computed with the same context whatever K is)."""
    d = stack
    plane = tifffile.imread(d / "noisy.tif")[0]
    src = omezarr.create_image(d / "plane.zarr", plane.shape, plane.dtype, chunks=(32, 32))
    src[0, 0, 0] = plane
    args = ["denoise", str(d / "m.pt"), str(d / "plane.zarr"), "--block-size", "32", "--precision", "fp32",
            "--device", "cpu"]
    assert main([*args[:3], str(d / "p1.zarr"), *args[3:]]) == 0
    assert parts.denoise_count(d / "plane.zarr", None, part_size=64 * 96 // 4, block_size=32, sr=False) == 4
    for stage in ("prepare/4", "1/4", "2/4", "3/4", "4/4", "gather/4"):
        assert main([*args[:3], str(d / "p4.zarr"), *args[3:], "--part", stage]) == 0
    records = omezarr.read_attrs(d / "p4.zarr")["parts"]
    assert [r["blocks"] for r in records] == [[0, 1], [1, 3], [3, 4], [4, 6]]  # 6 regions of 32x32, row by row
    assert chunk_files(d / "p1.zarr") == chunk_files(d / "p4.zarr") != {}
