"""Every bad input is that file's problem only: one clear message naming the file (or config key,
or sample-sheet row) and the problem, and with --keep-going every other file of the run completes.

File problems share one pipeline run (module fixture `bad_run`): a tiny archive where a good
configuration `good` (train FOV g1, test FOV g2) carries one bad or unusual test FOV per case,
and a configuration `small` trains on an image smaller than the training patch. Config and
sample-sheet problems stop the run at startup (Snakemake validates the config and the sample
table before any job starts), so they are dry runs.

Decisions (documented in config/README.md, "Bad inputs"):
- refused, one line ``n2sr: error: <file>: <problem>[; <fix>]`` in the job's log and in
  Snakemake's output: truncated TIFF, zero-byte file, not an image, NaN/Inf, RGB, an image
  smaller than the training patch, a reference of another shape, a plane over the pixel limit,
  a TIFF whose pages differ in shape, an empty folder series, a damaged Zarr chunk (named);
- denoised, but scoring with a fixed data range is refused until the config gives one
  (evaluate.data_range or evaluate.bits): float64, signed (int16) data, and wide unsigned data
  that do not fill their dtype (12-bit data in uint16, uint32); a constant reference cannot be
  scored at all;
- accepted and handled: odd sizes, a raw path starting with '-' (never read as an option);
- refused at startup, before any job runs: a config with an unknown key or a wrong type, or both
  evaluate.data_range and evaluate.bits; a sample sheet row naming a missing raw file or a missing
  reference, a symbolic link loop, a path with '{' (Snakemake would expand it); a sheet that is not
  UTF-8 (line named);
- direct command-line cases (`test_bad_command_input`): hostile, damaged and foreign
  checkpoints, an unknown key in a synthetic spec, a symbolic link loop, a plane over
  N2SR_MAX_PIXELS: exit code 1 and one line.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from pipeline_helpers import noisy_stack, snakemake, tiny_config, write_config, write_fov, write_sheet, zarr_array

pytestmark = pytest.mark.slow


def _tif(path: Path, data: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, data, **kwargs)
    return path


def _stack(**kwargs) -> np.ndarray:
    return noisy_stack(**kwargs)[0]


def truncated(d: Path) -> Path:
    path = _tif(d / "truncated.tif", _stack(seed=3), photometric="minisblack")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def empty(d: Path) -> Path:
    path = d / "empty.tif"
    path.write_bytes(b"")
    return path


def not_an_image(d: Path) -> Path:
    path = d / "notes.tif"
    path.write_text("exposure 100 ms, laser 488 nm: this is a text file saved with the wrong name\n")
    return path


def nan_inf(d: Path) -> Path:
    data = _stack(seed=4).astype(np.float32)
    data[0, 3, 3], data[0, 5, 7] = np.nan, np.inf
    return _tif(d / "nan.tif", data, photometric="minisblack")


def rgb(d: Path) -> Path:
    return _tif(d / "rgb.tif", np.moveaxis(_stack(shape=(3, 64, 64), seed=5), 0, -1), photometric="rgb")


def float64(d: Path) -> Path:
    return _tif(d / "float64.tif", _stack(seed=6).astype(np.float64) / 255.0, photometric="minisblack")


def uint32(d: Path) -> Path:
    return _tif(d / "uint32.tif", _stack(seed=7).astype(np.uint32) * 1000, photometric="minisblack")


def int16(d: Path) -> Path:
    """Signed data with negative values (e.g. offset-subtracted): int16's full scale is no range to score with."""
    return _tif(d / "int16.tif", _stack(seed=11).astype(np.int16) - 100, photometric="minisblack")


def uint12(d: Path) -> Path:
    """12-bit camera data stored as uint16 (maximum <= 4095)."""
    return _tif(d / "uint12.tif", _stack(seed=12).astype(np.uint16) * 16, photometric="minisblack")


def png_header(path: Path, width: int, height: int) -> Path:
    """A grayscale PNG whose header claims width x height (one short row of data follows): a damaged
    header or a decompression bomb; Pillow would refuse it as a DecompressionBombError."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
                     + chunk(b"IEND", b""))
    return path


def huge_png(d: Path) -> Path:
    return png_header(d / "huge.png", 40000, 40000)


def mixed_pages(d: Path) -> Path:
    """A plain TIFF of three 64x64 pages and one 48x48 page (tifffile makes two series of it)."""
    path = d / "mixed.tif"
    with tifffile.TiffWriter(path) as tif:
        for plane in _stack(seed=13):
            tif.write(plane, photometric="minisblack", metadata=None)
        tif.write(_stack(shape=(1, 48, 48), seed=13)[0], photometric="minisblack", metadata=None)
    return path


def empty_folder(d: Path) -> Path:
    path = d / "emptyseries"
    path.mkdir(parents=True, exist_ok=True)
    (path / ".DS_Store").write_bytes(b"\0")  # hidden files are not captures
    return path


def dash(d: Path) -> Path:
    """A raw file whose path (relative to the working directory) starts with '-'."""
    _tif(d.parent / "-dash.tif", _stack(seed=14), photometric="minisblack")
    return Path("-dash.tif")


def damaged_zarr(d: Path) -> Path:
    """An OME-Zarr (given as a reference) whose second shard (planes 2-3) is cut short."""
    from n2sr.steps.ingest import IngestConfig, ingest

    src = _tif(d / "zref_src.tif", _stack(shape=(4, 64, 64), seed=15), photometric="minisblack")
    path = ingest(src, d / "zref.zarr", IngestConfig(shard_mb=2 * 64 * 64 / 2**20))  # shards of 2 planes
    shard = path / "0/c/1/0/0/0/0"
    shard.write_bytes(shard.read_bytes()[:10])
    return path


def constant(d: Path) -> Path:
    return _tif(d / "constant.tif", np.full((3, 64, 64), 100, np.uint8), photometric="minisblack")


def odd(d: Path) -> Path:
    return _tif(d / "odd.tif", _stack(shape=(3, 63, 65), seed=8), photometric="minisblack")


@dataclass
class Case:
    """One bad input: FOV `fov` (made by `make`, a test FOV of configuration `good`).

    Refused: `log` is the job whose log holds the one-line message, `problem` its text, `names`
    what it names (the raw file, or the pipeline's ingested / reference Zarr of that FOV).
    `denoised`: the FOV is still denoised (the problem only concerns scoring it).
    `reference`: makes the FOV's given reference file (else the captures are averaged).
    """

    fov: str
    make: object = None
    log: str | None = None
    problem: str | None = None
    names: str = "raw"
    denoised: bool = False
    reference: object = None  # makes the FOV's given reference (named by names="given")


FILE_CASES = {
    "truncated TIFF": Case("truncated", truncated, "ingest", "cannot read as TIFF"),
    "zero-byte file": Case("empty", empty, "ingest", "file is empty (0 bytes)"),
    "not an image": Case("notes", not_an_image, "ingest", "cannot read as TIFF (not a TIFF file"),
    "NaN/Inf values": Case("nan", nan_inf, "ingest", "contains 2 NaN/Inf values"),
    "RGB": Case("rgb", rgb, "ingest", "3 samples per pixel (RGB); expected grayscale"),
    # float data is denoised, but PSNR/SSIM need a fixed range that a float dtype does not give
    "float64": Case("float64", float64, "evaluate", "has no fixed data range", names="reference", denoised=True),
    # integer data that do not fill their dtype: the dtype's full scale would inflate PSNR
    "uint32": Case("uint32", uint32, "evaluate", "the data are probably not 32-bit", names="reference",
                   denoised=True),
    "12-bit data in uint16": Case("uint12", uint12, "evaluate", "fits in 12 bits: the data are probably not 16-bit",
                                  names="reference",
                                  denoised=True),
    "signed int16 with negative values": Case("int16", int16, "evaluate", "reference dtype int16 is signed",
                                              names="reference", denoised=True),
    "PNG over the pixel limit": Case("huge", huge_png, "ingest", "= 1600000000 pixels is over the limit of"),
    "TIFF pages of different shapes": Case("mixed", mixed_pages, "ingest",
                                           "pages differ in shape: page 0 is 64x64 but page 3 is 48x48"),
    "empty folder series": Case("emptyseries", empty_folder, "ingest", "folder holds no .png, .tif or .tiff files"),
    "damaged Zarr chunk": Case("zref", lambda d: write_fov(d, "zref", seed=15)[0], "reference",
                               "shard 0/c/1/0/0/0/0 is damaged", names="given", denoised=True,
                               reference=damaged_zarr),
    "raw path starting with '-'": Case("dash", dash, denoised=True),
    # denoised; scoring against a constant reference is undefined (per-image range 0)
    "constant image": Case("constant", constant, "evaluate", "reference is constant (100)", names="reference",
                           denoised=True),
    "odd sizes": Case("odd", odd, denoised=True),
    "reference of another shape": Case("refshape", None, "evaluate", "planes are 64x64 but the reference",
                                       names="ingested", denoised=True),
    "smaller than the training patch": Case("tiny", None, "train", "smaller than the training patch (32)",
                                            names="ingested"),
}
def _loop(d: Path) -> Path:
    a, b = d / "loop_a.tif", d / "loop_b.tif"
    a.symlink_to(b.name)
    b.symlink_to(a.name)
    return a


def _braces(d: Path) -> Path:
    return write_fov(d, "scan_{fov}", seed=16)[0]


STARTUP_CASES = {
    "config unknown key": ({"train": {"iterationz": 5}},
                           "config train: Additional properties are not allowed ('iterationz' was unexpected)"),
    "config wrong type": ({"train": {"iterations": "many"}}, "config train.iterations: 'many' is not of type 'integer'"),
    "config data_range and bits": ({"evaluate": {"data_range": 255, "bits": 12}},
                                   "config evaluate.bits: 12 is not of type 'null'"),
    "sheet row naming a missing file": "raw",
    "missing reference": "reference",
    # (make the row's raw file, the problem after "<sheet> line 4: raw '<path>' ")
    "raw symbolic link loop": (_loop, "is a symbolic link loop"),
    "raw path with {fov}": (_braces, "contains '{' or '}', which Snakemake would read as a wildcard"),
    "sheet not UTF-8": "encoding",
}


def _build(work: Path) -> dict[str, Path]:
    """The archive and sheet; returns each FOV's raw file."""
    d = work / "archive"
    # good FOVs first in sort order, so the configuration's crops figure shows a good one
    g1, _ = write_fov(d, "01", seed=1)
    g2, g2_ref = write_fov(d, "02", seed=2)
    raws = {"01": g1, "02": g2}
    rows = [("good", "01", g1, "", "train"), ("good", "02", g2, g2_ref, "test")]
    for case in FILE_CASES.values():
        if case.make is not None:
            raws[case.fov] = case.make(d)
            reference = raws[f"{case.fov}:reference"] = case.reference(d) if case.reference else ""
            rows.append(("good", case.fov, raws[case.fov], reference, "test"))
    raws["refshape"] = write_fov(d, "refshape", seed=9)[0]
    other_shape = _tif(d / "refshape_ref48.tif", noisy_stack(shape=(1, 48, 48), seed=9)[1])
    rows.append(("good", "refshape", raws["refshape"], other_shape, "test"))
    raws["tiny"] = write_fov(d, "tiny", shape=(3, 16, 16), seed=10)[0]
    rows.append(("small", "tiny", raws["tiny"], "", "train"))
    write_sheet(work / "samples.tsv", rows)
    config = tiny_config(work / "samples.tsv", iterations=10, val_every=10, checkpoint_every=10)
    config["denoise"].update(write_sr=False, write_tiff=False)
    write_config(work, config)
    return raws


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    """One --keep-going run over every bad file; returns (work dir, Snakemake output, raw files)."""
    work = tmp_path_factory.mktemp("bad_inputs")
    raws = _build(work)
    run = snakemake(work, "--configfile", "config.yaml", "--cores", "2", "--keep-going", timeout=900, one_cpu=False)
    assert run.returncode != 0, run.stdout  # some jobs fail, by design
    return work, run.stdout, raws


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("n2sr: error:")]


def _good_parts_complete(work: Path) -> None:
    """The good FOVs and every accepted file went through every step."""
    results = work / "results"
    assert (results / "models/good/model.pt").is_file()
    assert (results / "reports/crops/good.png").is_file()
    for fov in ["02", *(c.fov for c in FILE_CASES.values() if c.denoised)]:
        assert (results / f"denoised/n2sr/good/{fov}.zarr").is_dir(), fov
    for fov in ["02", *(c.fov for c in FILE_CASES.values() if c.denoised and not c.log)]:
        for method in ("noisy", "n2sr"):
            rows = pd.read_csv(results / f"metrics/{method}/good/{fov}.csv")
            assert len(rows) == 3 and np.isfinite(rows["psnr"]).all(), (fov, method, rows)
    # The summary pools every test FOV's metrics, so it cannot be written while one failed;
    # the partial one summarises the FOVs that were scored and lists the others.
    assert not (results / "reports/summary.csv").exists()
    partial = pd.read_csv(results / "reports/partial/summary.csv")
    assert set(partial["method"]) == {"noisy", "n2sr"}
    scored = {f"{method}/good/{fov}.csv" for method in ("noisy", "n2sr")
              for fov in ["02", *(c.fov for c in FILE_CASES.values() if c.denoised and not c.log)]}
    missing = (results / "reports/partial/missing.txt").read_text().split()
    assert missing and not scored & {m.removeprefix("results/metrics/") for m in missing}
    assert len(partial) and (partial["n"] > 0).all()


def _startup_run(tmp_path: Path, case: str) -> tuple[str, str]:
    d = tmp_path / "archive"
    g1, _ = write_fov(d, "01", seed=1)
    g2, g2_ref = write_fov(d, "02", seed=2)
    rows = [("good", "01", g1, "", "train"), ("good", "02", g2, g2_ref, "test")]
    sheet = tmp_path / "samples.tsv"
    config = tiny_config(sheet)
    override = STARTUP_CASES[case]
    if isinstance(override, tuple) and callable(override[0]):
        make, problem = override
        raw = make(d)
        rows.append(("good", "g3", raw, "", "test"))
        expected = [f"{sheet} line 4: raw '{raw}' {problem}"]
    elif isinstance(override, tuple):
        override, message = override
        for section, values in override.items():
            config[section].update(values)
        expected = [message]
    elif override == "encoding":
        expected = [f"sample sheet {sheet} line 3: byte 0xe9 at column 2 is not UTF-8 text"]
    else:
        missing = d / "gone.tif"
        rows.append(("good", "g3", missing if override == "raw" else g2, missing if override == "reference" else "",
                     "test"))
        expected = [f"{sheet} line 4: {override} '{missing}' does not exist"]
    write_sheet(sheet, rows)
    if override == "encoding":  # a Latin-1 "é" in the first test row's configuration, as old spreadsheets save it
        sheet.write_bytes(sheet.read_bytes().replace(b"good\t02", "géod\t02".encode("latin-1")))
    write_config(tmp_path, config)
    run = snakemake(tmp_path, "--configfile", "config.yaml", "--cores", "2", "--keep-going", one_cpu=False)
    assert run.returncode != 0, run.stdout
    assert not (tmp_path / "results").exists(), "nothing may run before the config and the sheet are valid"
    return run.stdout, expected


@pytest.mark.parametrize("case", [*FILE_CASES, *STARTUP_CASES])
def test_bad_input(case, request, tmp_path):
    if case in STARTUP_CASES:
        out, expected = _startup_run(tmp_path, case)
        for text in expected:
            assert out.count(text) == 1, out
        assert "Traceback" not in out and "Failed validating" not in out, out  # no schema or config dump
        return

    work, out, raws = request.getfixturevalue("bad_run")
    c = FILE_CASES[case]
    configuration = "small" if c.log == "train" else "good"
    if c.denoised:
        denoised = zarr_array(work / f"results/denoised/n2sr/good/{c.fov}.zarr")
        assert denoised.dtype == np.float32 and np.isfinite(denoised).all()
        assert denoised.shape[-2:] == (tifffile.imread(work / raws[c.fov]).shape[-2:])
    if c.log is None:  # accepted: no job of this FOV reports an error
        for log in (work / "logs").rglob(f"{c.fov}.log"):
            assert not _error_lines(log.read_text()), log.read_text()
    else:
        log = {"ingest": f"logs/ingest/good/{c.fov}.log", "train": "logs/train/small.log",
               "evaluate": f"logs/evaluate/noisy/good/{c.fov}.log",
               "reference": f"logs/reference/good/{c.fov}.log"}[c.log]
        text = (work / log).read_text()
        lines = _error_lines(text)
        assert len(lines) == 1 and "Traceback" not in text, text
        line = lines[0]
        named = {"raw": str(raws[c.fov]), "ingested": f"results/ingest/{configuration}/{c.fov}.zarr",
                 "reference": f"results/reference/{configuration}/{c.fov}.zarr",
                 "given": str(raws.get(f"{c.fov}:reference"))}[c.names]
        assert f"n2sr: error: {named}: " in line or named in line, line
        assert c.problem in line, line
        assert line in out, "Snakemake's output shows the failed job's message"
        if c.log == "evaluate":  # the denoised image meets the same reference, with the same problem
            n2sr_line = _error_lines((work / f"logs/evaluate/n2sr/good/{c.fov}.log").read_text())
            assert len(n2sr_line) == 1 and c.problem in n2sr_line[0], n2sr_line
    _good_parts_complete(work)


# Problems met by one command, outside a pipeline run: each case makes its files in a folder and
# returns (command-line arguments, the file the line names, the problem it states).
def _checkpoint(d: Path, **changes) -> Path:
    import torch

    from n2sr.config import ModelConfig
    from n2sr.io import checkpoints
    from n2sr.nn.model import build_model

    config = {"features": 8, "final_features": 16, "unet_out_channels": 8, "sr_channels": 8}
    model = build_model(ModelConfig(**config), sr=True)
    state = {"method": "n2sr", "scale": 2, "model_config": config, "model": model.state_dict(),
             "normalizer": {"offset": 0.0, "scale": 255.0, "mode": "range"}, **changes}
    path = d / "model.pt"
    checkpoints.save(path, state)
    assert isinstance(torch.load(path, weights_only=True), dict)
    return path


def _noisy_zarr(d: Path) -> Path:
    from n2sr.steps.ingest import ingest

    return ingest(_tif(d / "noisy.tif", _stack(seed=20), photometric="minisblack"), d / "noisy.zarr")


class _Hostile:
    """Unpickling this runs a shell command (makes the file `pwned`)."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def hostile_checkpoint(d: Path):
    import torch

    from n2sr.io.checkpoints import FORMAT

    path = d / "model.pt"
    torch.save({"format": FORMAT, "model": _Hostile()}, path)
    return ["denoise", path, _noisy_zarr(d), d / "out.zarr"], path, \
        "holds pickled code or objects other than tensors and plain containers; refused"


def damaged_checkpoint(d: Path):
    path = _checkpoint(d)
    path.write_bytes(path.read_bytes()[:-200])
    return ["denoise", path, _noisy_zarr(d), d / "out.zarr"], path, \
        "not a readable n2sr checkpoint (PytorchStreamReader failed reading zip archive"


def wrong_keys_checkpoint(d: Path):
    path = _checkpoint(d, normalizer={"shift": 0.0, "factor": 255.0})
    return ["denoise", path, _noisy_zarr(d), d / "out.zarr"], path, \
        "damaged or foreign checkpoint: no key 'offset' in its recorded settings"


def spec_unknown_key(d: Path):
    spec = d / "spec.yaml"
    spec.write_text("configurations: {demo: {photons: 10.0, read_sigma: 1.0}}\nfovz: 2\n")
    return ["synth", d / "archive", "--spec", spec], spec, "unknown key 'fovz'; a spec may set configurations"


def symlink_loop(d: Path):
    loop = _loop(d)
    return ["ingest", loop, d / "out.zarr"], loop, "symbolic link loop"


def over_pixel_limit(d: Path):
    """A genuine 100x100 PNG under a lowered N2SR_MAX_PIXELS (the limit that replaces Pillow's)."""
    from PIL import Image

    path = d / "big.png"
    Image.fromarray(_stack(shape=(1, 100, 100), seed=21)[0]).save(path)
    return ["ingest", path, d / "out.zarr"], path, "plane of 100x100 = 10000 pixels is over the limit of 5000"


COMMAND_CASES = {
    "hostile checkpoint": hostile_checkpoint,
    "damaged checkpoint": damaged_checkpoint,
    "checkpoint with wrong keys": wrong_keys_checkpoint,
    "unknown key in the synthetic spec": spec_unknown_key,
    "symbolic link loop": symlink_loop,
    "plane over N2SR_MAX_PIXELS": over_pixel_limit,
}


@pytest.mark.parametrize("case", COMMAND_CASES)
def test_bad_command_input(case, tmp_path):
    args, named, problem = COMMAND_CASES[case](tmp_path)
    run = subprocess.run([sys.executable, "-m", "n2sr.cli", *map(str, args)], cwd=tmp_path, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300,
                         env={**os.environ, "N2SR_MAX_PIXELS": "5000"})
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[0].startswith(f"n2sr: error: {named}: ") and problem in lines[0], lines[0]
    # torch's advice to load with weights_only=False (which would run the file's code) is not repeated
    assert "weights_only" not in run.stderr and "internal miniz" not in run.stderr, run.stderr
    assert not (tmp_path / "pwned").exists(), "the checkpoint's code ran"
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "archive").exists()
