"""Ingest scattered over K jobs (`n2sr ingest --part`, `n2sr.io.parts`): K = 1 and K = 4 give the
same bytes, the output appears only after gather, a killed part is redone alone, and parts whose
boundaries would not fit the prepared output are refused before anything is written; each with one
file per plane and with shards of 5 planes (parts are runs of whole shards)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

from n2sr.cli import main
from n2sr.io import images, omezarr, parts

REPO = Path(__file__).resolve().parents[1]


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def source(tmp_path) -> Path:
    """37 planes (no multiple of 4: parts of 9 and 10 planes), one of them all zero."""
    data = np.random.default_rng(0).integers(0, 4000, (37, 24, 40)).astype(np.uint16)
    data[5] = 0  # an all-zero plane: no chunk, in every K
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack")
    return tmp_path / "s.tif"


SHARDS = {"0": None, "0.01": 5}  # --shard-mb: planes per shard of the fixture's 24 x 40 uint16 planes
LAYOUT = ["0"]


@pytest.fixture(autouse=True, params=list(SHARDS))
def layout(request) -> int | None:
    """Every test here runs with one file per plane and with shards of 5 planes."""
    LAYOUT[0] = request.param
    return SHARDS[request.param]


def ingest(source: Path, out: Path, *extra: str) -> int:
    return main(["ingest", str(source), str(out), "--shard-mb", LAYOUT[0], *extra])


def scattered(source: Path, out: Path, count: int, order=None) -> None:
    assert ingest(source, out, "--part", f"prepare/{count}") == 0
    for k in order or range(1, count + 1):
        assert ingest(source, out, "--part", f"{k}/{count}") == 0
    assert ingest(source, out, "--part", f"gather/{count}") == 0


def test_one_and_four_parts_give_the_bytes_of_one_job(tmp_path, source):
    assert ingest(source, tmp_path / "one.zarr") == 0
    scattered(source, tmp_path / "k1.zarr", 1)
    scattered(source, tmp_path / "k4.zarr", 4, order=(3, 1, 4, 2))
    one = files_of(tmp_path / "one.zarr")
    assert files_of(tmp_path / "k1.zarr") == one and files_of(tmp_path / "k4.zarr") == one
    attrs = omezarr.read_attrs(tmp_path / "k4.zarr")
    assert attrs["sha256"] == images.sha256_file(source) and "parts" not in attrs
    assert not parts.folder(tmp_path / "k4.zarr").exists()
    np.testing.assert_array_equal(omezarr.open_image(tmp_path / "k4.zarr")[:, 0, 0], tifffile.imread(source))


def test_output_appears_only_after_gather_of_every_part(tmp_path, source):
    out = tmp_path / "out.zarr"
    assert ingest(source, out, "--part", "prepare/4") == 0
    for k in (1, 2, 4):
        assert ingest(source, out, "--part", f"{k}/4") == 0
    assert not out.exists()
    assert ingest(source, out, "--part", "gather/4") == 1  # part 3 missing: nothing published
    assert not out.exists() and parts.folder(out).is_dir()
    assert ingest(source, out, "--part", "3/4") == 0
    assert ingest(source, out, "--part", "gather/4") == 0
    assert out.is_dir()


KILLED_PART = textwrap.dedent("""
    import os, signal, sys
    from n2sr.steps import ingest as mod
    read, calls = mod._read_page, []
    def dying(*args):
        calls.append(1)
        if len(calls) > 3:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-part, some chunks written, no marker
        return read(*args)
    mod._read_page = dying
    mod.ingest(sys.argv[1], sys.argv[2], part="3/4")
""")


def test_a_part_killed_mid_way_is_redone_alone(tmp_path, source, layout):
    out = tmp_path / "out.zarr"
    assert ingest(source, out, "--part", "prepare/4") == 0
    for k in (1, 2, 4):
        assert ingest(source, out, "--part", f"{k}/4") == 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    killed = subprocess.run([sys.executable, "-c", KILLED_PART, str(source), str(out)], env=env)
    assert killed.returncode == -signal.SIGKILL
    assert not Path(parts.marker(out, 3, 4)).exists()
    before = {p: p.stat().st_mtime_ns for p in parts.folder(out).rglob("*") if p.is_file()}
    assert ingest(source, out, "--part", "gather/4") == 1  # the killed part is not done
    assert ingest(source, out, "--part", "3/4") == 0
    start, stop = parts.plane_runs((37, 1, 1), layout and (layout, 1, 1), 4)[2]
    after = {p: p.stat().st_mtime_ns for p in parts.folder(out).rglob("*") if p.is_file()}
    touched = {p for p in after if before.get(p) != after[p]}
    files = {int(p.relative_to(parts.partial(out, out) / "0" / "c").parts[0]) for p in touched if "/c/" in p.as_posix()}
    planes = {f * (layout or 1) for f in files}  # a shard's first plane
    assert planes <= set(range(start, stop)) and planes  # only part 3's chunks (shards) were written again
    assert {p.name for p in touched if "/c/" not in p.as_posix()} == {"part-3-of-4.json"}
    assert ingest(source, out, "--part", "gather/4") == 0
    assert ingest(source, tmp_path / "one.zarr") == 0
    assert files_of(out) == files_of(tmp_path / "one.zarr")


def test_misfitting_parts_are_refused_before_anything_is_written(tmp_path, source, capsys):
    out = tmp_path / "out.zarr"
    assert ingest(source, out, "--part", "prepare/40") == 1  # 40 parts of 37 planes (8 shards): one would be empty
    assert "a part would be empty" in capsys.readouterr().err and not parts.folder(out).exists()
    assert ingest(source, out, "--part", "prepare/4") == 0
    assert ingest(source, out, "--part", "1/3") == 1  # prepared for 4 parts
    assert "prepared for 4 parts" in capsys.readouterr().err
    data = tifffile.imread(source)
    tifffile.imwrite(source, data[:36], photometric="minisblack")  # the source changed after prepare
    assert ingest(source, out, "--part", "1/4") == 1
    assert "would not fit together" in capsys.readouterr().err
    assert not (parts.partial(out, out) / "0" / "c").exists()  # no chunk written
    assert ingest(source, out, "--part", "gather/4") == 1 and not out.exists()


def test_parts_take_tiff_stacks_only(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "p.png")
    assert ingest(tmp_path / "p.png", tmp_path / "out.zarr", "--part", "prepare/1") == 1
    assert not parts.folder(tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("options", [["--clevel", "1"], ["--codec", "lz4"]])
def test_the_prepared_codec_and_level_hold_for_every_part(tmp_path, source, options):
    """--codec and --clevel are prepare's (it creates the array); parts write with whatever was
    prepared, so the gathered output is that of one job with the same options."""
    assert ingest(source, tmp_path / "one.zarr", *options) == 0
    out = tmp_path / "four.zarr"
    assert ingest(source, out, "--part", "prepare/4", *options) == 0
    for k in range(1, 5):
        assert ingest(source, out, "--part", f"{k}/4") == 0
    assert ingest(source, out, "--part", "gather/4") == 0
    assert files_of(out) == files_of(tmp_path / "one.zarr")
