"""Helpers for tests that run the Snakemake pipeline on tiny archives (faults, bad inputs).

A tiny run: 64x64 uint8 captures, a narrow network (features 8), a few dozen fp32 iterations,
so a whole pipeline takes seconds on 2 shared cores.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import tifffile
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def noisy_stack(shape=(3, 64, 64), seed: int = 0, photons: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """(captures, clean): Poisson-noisy uint8 captures of one smooth clean uint8 image."""
    rng = np.random.default_rng(seed)
    t, h, w = shape
    y, x = np.mgrid[:h, :w]
    clean = 120 + 80 * np.sin(y / 7.0 + seed) * np.cos(x / 5.0)
    captures = rng.poisson(np.clip(clean, 0, None)[None] / 255.0 * photons, size=(t, h, w)) * (255.0 / photons)
    return np.clip(captures, 0, 255).astype(np.uint8), np.clip(clean, 0, 255).astype(np.uint8)


def write_fov(folder: Path, name: str, shape=(3, 64, 64), seed: int = 0) -> tuple[Path, Path]:
    """A noisy TIFF stack `<name>.tif` and its clean reference `<name>_ref.tif` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    captures, clean = noisy_stack(shape, seed)
    raw, ref = folder / f"{name}.tif", folder / f"{name}_ref.tif"
    tifffile.imwrite(raw, captures, photometric="minisblack")
    tifffile.imwrite(ref, clean)
    return raw, ref


def write_sheet(path: Path, rows: list[tuple[str, str, str, str, str]]) -> Path:
    """Sample sheet from (configuration, fov, raw, reference, split) rows."""
    lines = ["configuration\tfov\traw\treference\tsplit", *("\t".join(map(str, r)) for r in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


NARROW = dict(features=8, final_features=16, unet_out_channels=8, sr_channels=8)
"""Half the width of config/config.yaml's network, for tests of the pipeline, not of its quality."""


def tiny_config(samples: str | Path, **train: object) -> dict:
    """The shipped config with a tiny, deterministic training and denoising; `train` overrides."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(synthetic=None, archive=None, samples=str(samples), test_captures=None)
    return make_tiny(config, **train)


def make_tiny(config: dict, **train: object) -> dict:
    """`config` (changed in place and returned) with a narrow network, a few dozen fp32 CPU
    iterations and one-thread jobs, so a run takes seconds; `train` overrides."""
    config["train"].update(iterations=40, minutes=None, batch_size=4, patch_size=32, val_every=20, val_patches=4,
                           checkpoint_every=20, precision="fp32", device="cpu", **NARROW)
    config["train"].update(train)
    # overlap "exact": a retried job's smaller tiles must reproduce the first attempt's output
    config["denoise"].update(tile_size=64, overlap="exact", block_size=2048, precision="fp32", device="cpu",
                             write_sr=True, write_tiff=True)
    for rule in ("train", "denoise"):
        config["resources"][rule].update(threads=1, gpu=0)
    config["resources"]["ingest"]["threads"] = 1
    return config


def write_config(work: Path, config: dict, name: str = "config.yaml") -> Path:
    path = work / name
    path.write_text(yaml.safe_dump(config))
    return path


def worker_cpu(cpus: Sequence[int]) -> int:
    """This pytest-xdist worker's own CPU among `cpus` (gw0 the last, gw1 the one before, ...)."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
    return sorted(cpus)[-1 - worker % len(cpus)]


def _pin_threads() -> None:
    """Start a new process group (so a test can kill the whole workflow) on one CPU,
    so torch uses the same thread count in every run (n2sr.cpus.available_cpus). Under
    pytest-xdist each worker pins to its own CPU (`worker_cpu`)."""
    os.setsid()
    os.sched_setaffinity(0, [worker_cpu(os.sched_getaffinity(0))])


def snakemake_cmd(work: Path, *args: str) -> list[str]:
    return [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work), *args]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", **extra}


def snakemake(work: Path, *args: str, timeout: float = 300, extra_env: dict[str, str] | None = None,
              one_cpu: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow in `work`; stdout and stderr together in `.stdout`. `one_cpu`: pinned
    to one CPU (deterministic numbers); else on every CPU (faster for many small jobs)."""
    return subprocess.run(snakemake_cmd(work, *args), cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout, env=env(**(extra_env or {})),
                          preexec_fn=_pin_threads if one_cpu else os.setsid)


def start_snakemake(work: Path, *args: str, log: Path) -> subprocess.Popen:
    """Start the workflow in the background, in its own process group, output to `log`."""
    with open(log, "w") as out:
        return subprocess.Popen(snakemake_cmd(work, *args), cwd=work, stdout=out, stderr=subprocess.STDOUT,
                                env=env(), preexec_fn=_pin_threads)


def wait_for(condition: Callable[[], object], timeout: float = 120, what: str = "condition",
             proc: subprocess.Popen | None = None, interval: float = 0.02):
    """Poll until `condition()` is truthy (and return it); fail when `proc` ends first or on timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"workflow ended (exit {proc.returncode}) before {what}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the workflow and every job it started (its process group), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is still running (not a zombie)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def jobs_run(output: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a Snakemake log started, in order."""
    jobs, rule = [], None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
            jobs.append([rule, ""])
        m = re.match(r"^wildcards: (.*)$", line.strip())
        if m and jobs:
            jobs[-1][1] = m.group(1)
    return [tuple(j) for j in jobs]


def job_resources(output: str, rule: str) -> list[dict[str, str]]:
    """The `resources:` line of each job of `rule` in a Snakemake log, in order."""
    found, current = [], None
    for line in output.splitlines():
        s = line.strip()
        m = re.match(r"^(?:local)?rule (\w+):", s)
        if m:
            current = m.group(1)
        elif s.startswith("resources:") and current == rule:
            found.append(dict(kv.split("=", 1) for kv in s[len("resources:"):].strip().split(", ")))
    return found


def zarr_array(path: Path) -> np.ndarray:
    from n2sr.io import omezarr

    return np.asarray(omezarr.open_image(path)[...])


def outputs_of(results: Path) -> dict[str, Path]:
    """Every result file or Zarr under `results`, by relative path."""
    found = {}
    for p in sorted(results.rglob("*")):
        rel = p.relative_to(results).as_posix()
        if any(part.endswith(".zarr") for part in Path(rel).parts[:-1]):
            continue  # inside a Zarr: compared as one array
        if any(part.startswith(".") for part in Path(rel).parts):
            continue  # a temporary sibling (.name.tmp-<pid>) of a job that was killed: never an output
        if rel.startswith("benchmarks/"):
            continue  # the jobs' own cost records (Snakemake benchmark files): which jobs ran, not outputs
        if p.name.endswith(".zarr") or p.is_file():
            found[rel] = p
    return found


# Columns that measure time, not results.
TIMING_COLUMNS = ("seconds", "it_per_s")


def assert_same_outputs(a: Path, b: Path) -> list[str]:
    """Every output under results/ `a` equals the one under `b`: Zarr and TIFF arrays, CSVs
    (timing columns aside), model weights; PNG figures only exist. Returns what was compared."""
    import torch

    from n2sr.io import checkpoints

    left, right = outputs_of(a), outputs_of(b)
    assert sorted(left) == sorted(right)
    for rel, p in left.items():
        q = right[rel]
        if rel.endswith(".zarr"):
            np.testing.assert_array_equal(zarr_array(p), zarr_array(q), err_msg=rel)
        elif rel.endswith(".tif"):
            np.testing.assert_array_equal(tifffile.imread(p), tifffile.imread(q), err_msg=rel)
        elif rel.endswith(".csv"):
            x, y = pd.read_csv(p), pd.read_csv(q)
            x, y = (f.drop(columns=[c for c in TIMING_COLUMNS if c in f.columns]) for f in (x, y))
            pd.testing.assert_frame_equal(x, y, check_exact=True, obj=rel)
        elif rel.endswith(".pt"):
            m, n = checkpoints.load(p), checkpoints.load(q)
            assert m["model"].keys() == n["model"].keys()
            for k in m["model"]:
                assert torch.equal(m["model"][k], n["model"][k]), f"{rel}: weight {k} differs"
            assert (m["step"], m["steps"]) == (n["step"], n["steps"]), rel
    return sorted(left)


def tiny_synthetic_config(work: Path, root: str) -> dict:
    """Spec and sheet of the tiny synthetic archive in `work` (generated under `root` by the
    pipeline's synth step); returns the default config pointed at them, for tests to adjust."""
    (work / "spec.yaml").write_text(yaml.safe_dump({
        "configurations": {"demo": {"photons": 10.0, "read_sigma": 1.0}},
        "fovs": 2, "captures": 3, "shape": [64, 64], "dtype": "uint8"}))
    (work / "samples.tsv").write_text(
        "configuration\tfov\traw\treference\tsplit\n"
        f"demo\t1\t{root}/demo/raw/1\t\ttrain\n"
        f"demo\t2\t{root}/demo/raw/2\t{root}/demo/gt/2/clean.tif\ttest\n")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(synthetic={"root": root, "seed": 1, "spec": "spec.yaml"}, samples="samples.tsv",
                  test_captures=[0, 2])
    return config


def write_references(root: Path, configuration: str, fovs: Sequence[int], shape=(64, 64)) -> dict[int, Path]:
    """Smooth clean 8-bit references in FMD's layout, ``root/<configuration>/gt/<fov>/avg50.png``."""
    from PIL import Image

    from n2sr.synthetic import clean_image

    paths = {}
    for fov in fovs:
        path = root / configuration / "gt" / str(fov) / "avg50.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rint(255 * clean_image(shape, np.random.default_rng(fov))).astype(np.uint8)).save(path)
        paths[fov] = path
    return paths


def tiny_references_config(references: str, configurations: dict, noise: dict, root: str = "noisy",
                           **train: object) -> dict:
    """config/synthetic.yaml (the paper's synthetic-noise experiment) on other references
    (`references`: their root, in FMD's layout; `configurations`: as synthetic.references),
    with noisy copies written under `root` and a tiny training; `train` overrides."""
    config = yaml.safe_load((REPO / "config/synthetic.yaml").read_text())
    config["synthetic"].update(root=root, noise=noise)
    config["synthetic"]["references"].update(root=references, configurations=configurations)
    return make_tiny(config, **train)
