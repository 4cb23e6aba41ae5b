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
  smaller than the training patch, a reference of another shape;
- accepted and handled: float64 and uint32 data (read as is, processed in float32, written as
  float32), a constant image, odd sizes;
- refused at startup, before any job runs: a config with an unknown key or a wrong type, a sample
  sheet row naming a missing raw file or a missing reference.
"""

from __future__ import annotations

import re
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
    """

    fov: str
    make: object = None
    log: str | None = None
    problem: str | None = None
    names: str = "raw"
    denoised: bool = False


FILE_CASES = {
    "truncated TIFF": Case("truncated", truncated, "ingest", "cannot read as TIFF"),
    "zero-byte file": Case("empty", empty, "ingest", "file is empty (0 bytes)"),
    "not an image": Case("notes", not_an_image, "ingest", "cannot read as TIFF (not a TIFF file"),
    "NaN/Inf values": Case("nan", nan_inf, "ingest", "contains 2 NaN/Inf values"),
    "RGB": Case("rgb", rgb, "ingest", "3 samples per pixel (RGB); expected grayscale"),
    # float data is denoised, but PSNR/SSIM need a fixed range that a float dtype does not give
    "float64": Case("float64", float64, "evaluate", "has no fixed data range", names="reference", denoised=True),
    "uint32": Case("uint32", uint32, denoised=True),
    # denoised; scoring against a constant reference is undefined (per-image range 0)
    "constant image": Case("constant", constant, "evaluate", "reference is constant (100)", names="reference",
                           denoised=True),
    "odd sizes": Case("odd", odd, denoised=True),
    "reference of another shape": Case("refshape", None, "evaluate", "planes are 64x64 but the reference",
                                       names="ingested", denoised=True),
    "smaller than the training patch": Case("tiny", None, "train", "smaller than the training patch (32)",
                                            names="ingested"),
}
STARTUP_CASES = {
    "config unknown key": ({"train": {"iterationz": 5}},
                           "config train: Additional properties are not allowed ('iterationz' was unexpected)"),
    "config wrong type": ({"train": {"iterations": "many"}}, "config train.iterations: 'many' is not of type 'integer'"),
    "sheet row naming a missing file": "raw",
    "missing reference": "reference",
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
            rows.append(("good", case.fov, raws[case.fov], "", "test"))
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
    config = tiny_config(tmp_path / "samples.tsv")
    override = STARTUP_CASES[case]
    if isinstance(override, tuple):
        override, message = override
        for section, values in override.items():
            config[section].update(values)
        expected = [message]
    else:
        missing = d / "gone.tif"
        rows.append(("good", "g3", missing if override == "raw" else g2, missing if override == "reference" else "",
                     "test"))
        expected = [f"{tmp_path / 'samples.tsv'} line 4: {override} '{missing}' does not exist"]
    write_sheet(tmp_path / "samples.tsv", rows)
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
        assert denoised.shape[-2:] == (tifffile.imread(raws[c.fov]).shape[-2:])
    if c.log is None:  # accepted: no job of this FOV reports an error
        for log in (work / "logs").rglob(f"{c.fov}.log"):
            assert not _error_lines(log.read_text()), log.read_text()
    else:
        log = {"ingest": f"logs/ingest/good/{c.fov}.log", "train": "logs/train/small.log",
               "evaluate": f"logs/evaluate/noisy/good/{c.fov}.log"}[c.log]
        text = (work / log).read_text()
        lines = _error_lines(text)
        assert len(lines) == 1 and "Traceback" not in text, text
        line = lines[0]
        named = {"raw": str(raws[c.fov]), "ingested": f"results/ingest/{configuration}/{c.fov}.zarr",
                 "reference": f"results/reference/{configuration}/{c.fov}.zarr"}[c.names]
        assert f"n2sr: error: {named}: " in line or named in line, line
        assert c.problem in line, line
        assert line in out, "Snakemake's output shows the failed job's message"
        if c.log == "evaluate":  # the denoised image meets the same reference, with the same problem
            n2sr_line = _error_lines((work / f"logs/evaluate/n2sr/good/{c.fov}.log").read_text())
            assert len(n2sr_line) == 1 and c.problem in n2sr_line[0], n2sr_line
    _good_parts_complete(work)
