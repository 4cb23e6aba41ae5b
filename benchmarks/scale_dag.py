"""How the workflow itself scales with the archive: dry-run time and per-image job overhead.

An archive of many small images, as a new user would try it: 2 configurations x F FOVs x 5
captures of 64x64 PNGs (a folder per FOV), FOV 1 of each configuration for training and the rest
for testing. For each size (1k, 10k, 50k images by default) and each config ``batch_size`` (1: a
job per FOV and step; 50: a job per 50 FOVs, workflow/rules/batches.smk):

- the dry run (``snakemake -n``, local executor) wall time and the jobs it plans;
- with the SLURM profile's groups (``profiles/slurm``: ingest, reference and scores of per-FOV
  jobs grouped 8-16 FOVs to a job), how many cluster jobs the same DAG submits (counted from a dry
  run with those groups; no cluster is needed for the count);

and for the smallest size (or those given by --local-images), a real local run of the per-FOV steps that need no model (ingest,
reference, noisy-image scoring: the noisy scores of every test FOV as targets) on 2 cores: wall
time per image, and the sum of the jobs' own wall times per image from their benchmark files.

    .venv/bin/python benchmarks/scale_dag.py [--images 1000 10000 50000] [--batch-sizes 1 50]

Writes ``scale_dag.json`` and ``scale_dag.md`` into ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
CAPTURES = 5
PROFILE = yaml.safe_load((REPO / "profiles/slurm/config.v8+.yaml").read_text())
GROUPS = ["--groups", *PROFILE["groups"], "--group-components", *PROFILE["group-components"]]


def make_archive(work: Path, fovs: int) -> None:
    """2 configurations x `fovs` FOVs x 5 captures of 64x64 PNGs and the sheet."""
    rng = np.random.default_rng(0)
    rows = ["configuration\tfov\traw\treference\tsplit"]
    for c in ("A", "B"):
        for f in range(1, fovs + 1):
            d = work / "archive" / c / str(f)
            d.mkdir(parents=True, exist_ok=True)
            for t in range(CAPTURES):
                Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(d / f"{t}.png")
            rows.append(f"{c}\t{f}\tarchive/{c}/{f}\t\t{'train' if f == 1 else 'test'}")
    (work / "samples.tsv").write_text("\n".join(rows) + "\n")


def write_config(work: Path, batch_size: int) -> str:
    """The shipped config on this archive with `batch_size` FOVs per job; the config file's name."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(synthetic=None, archive=None, samples="samples.tsv", batch_size=batch_size)
    name = f"config-{batch_size}.yaml"
    (work / name).write_text(yaml.safe_dump(config))
    return name


def snakemake(work: Path, config: str, *args: str) -> tuple[float, str]:
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--configfile", config, "--cores", "2", *args]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    return seconds, run.stdout + run.stderr


def planned_jobs(log: str) -> int:
    return int(re.search(r"^total\s+(\d+)$", log, re.M).group(1))


def local_run(work: Path, config: str, fovs: int) -> dict:
    """Ingest, reference and noisy scores of every test FOV for real; wall and the jobs' own time."""
    targets = [f"results/metrics/noisy/{c}/{f}.csv" for c in ("A", "B") for f in range(2, fovs + 1)]
    wall, _ = snakemake(work, config, *targets)
    costs = {}
    for f in (work / "results/benchmarks").rglob("*.tsv"):
        rule = f.relative_to(work / "results/benchmarks").parts[0]
        costs[rule] = costs.get(rule, 0.0) + float(f.read_text().splitlines()[1].split("\t")[0])
    images = 2 * fovs * CAPTURES
    run = {"images": images, "wall_s": round(wall, 1), "wall_s_per_image": round(wall / images, 3),
           "job_seconds_per_image": {r: round(s / images, 3) for r, s in sorted(costs.items())}}
    for folder in ("results", "logs", ".snakemake"):  # the next batch size starts from nothing
        shutil.rmtree(work / folder, ignore_errors=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 50],
                        help="config batch_size values to measure (1: a job per FOV and step)")
    parser.add_argument("--local-images", type=int, nargs="*", default=None,
                        help="archive sizes that also get a real local run (default: the smallest)")
    args = parser.parse_args()
    local = set(args.local_images if args.local_images is not None else [min(args.images)])
    rows, runs = [], []
    with tempfile.TemporaryDirectory(prefix="n2sr-scale-") as tmp:
        for images in args.images:
            fovs = images // (2 * CAPTURES)
            work = Path(tmp) / f"archive-{images}"
            make_archive(work, fovs)
            for size in args.batch_sizes:
                config = write_config(work, size)
                plain_seconds, full = snakemake(work, config, "-n")
                _, grouped = snakemake(work, config, "-n", "--executor", "slurm", "--jobs", "10", *GROUPS,
                                       "--default-resources", "slurm_account=x", "slurm_partition=y")
                rows.append({"images": images, "fovs": 2 * fovs, "batch_size": size, "dry_run_s": round(plain_seconds, 1),
                             "jobs": planned_jobs(full), "slurm_jobs_grouped": grouped.count("Group job ")
                             + len(re.findall(r"^rule (?!all:|manifest:)\w+:", grouped, re.M)),
                             "dry_run_s_per_image_ms": round(1000 * plain_seconds / images, 2)})
                print(rows[-1], flush=True)
                if images in local:
                    run = local_run(work, config, fovs)
                    runs.append({"batch_size": size, **run})
                    print(runs[-1], flush=True)
    startup = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import snakemake.cli"], check=True)
    startup = round(time.perf_counter() - startup, 1)
    result = {"snakemake_startup_s": startup, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "load_before": open("/proc/loadavg").read().split()[:3], "dry_runs": rows, "local_runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale_dag.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Scale of the workflow: dry run and per-image overhead", "",
             f"`benchmarks/scale_dag.py` on {result['machine']}; 2 configurations x FOVs x {CAPTURES} captures of "
             "64x64 PNGs, FOV 1 of each configuration trains, the rest are test FOVs.", "",
             f"Snakemake's own start-up (`import snakemake.cli`, which loads the executor plugins) took {startup} s "
             "of every dry run here; on this machine the SLURM plugin's probe `scontrol show config` waits ~9 s for "
             "a controller that is not running (on a cluster it answers at once).", "",
             "| images | FOVs | batch_size | jobs planned | dry run s | ms per image | SLURM jobs (profile's groups) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['images']} | {r['fovs']} | {r['batch_size']} | {r['jobs']} | {r['dry_run_s']} | "
              f"{r['dry_run_s_per_image_ms']} | {r['slurm_jobs_grouped']} |" for r in rows]
    lines += ["", "Local run of ingest, reference and noisy scoring (every test FOV's noisy scores as targets) on 2 cores:",
              "", "| images | batch_size | wall s | wall s per image | jobs' own wall s per image, by rule |",
              "|---:|---:|---:|---:|---|"]
    lines += [f"| {r['images']} | {r['batch_size']} | {r['wall_s']} | {r['wall_s_per_image']} | "
              f"{r['job_seconds_per_image']} |" for r in runs]
    (args.out / "scale_dag.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
