"""How the workflow itself scales with the archive: dry-run time and per-image job overhead.

An archive of many small images, as a new user would try it: 2 configurations x F FOVs x 5
captures of 64x64 PNGs (a folder per FOV), FOV 1 of each configuration for training and the rest
for testing. For each size (1k, 10k, 50k images by default):

- the dry run (``snakemake -n``, local executor) wall time and the jobs it plans;
- with the SLURM profile's groups (``profiles/slurm``: ingest, reference and scores batched 16
  FOVs to a job), how many cluster jobs the same DAG submits (counted from a dry run with those
  groups; no cluster is needed for the count);

and for the smallest size, a real local run of the per-FOV steps that need no model (ingest,
reference, noisy-image scoring: `--until` those rules) on 2 cores: wall time per image, and
the sum of the jobs' own wall times per image from their Snakemake benchmark files.

    .venv/bin/python benchmarks/scale_dag.py [--images 1000 10000 50000] [--out benchmarks/results]

Writes ``scale_dag.json`` and ``scale_dag.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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
    """2 configurations x `fovs` FOVs x 5 captures of 64x64 PNGs, the sheet and the config."""
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
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(synthetic=None, archive=None, samples="samples.tsv")
    (work / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(work: Path, *args: str) -> tuple[float, str]:
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--configfile", "config.yaml", "--cores", "2", *args]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    return seconds, run.stdout + run.stderr


def planned_jobs(log: str) -> int:
    return int(re.search(r"^total\s+(\d+)$", log, re.M).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results")
    args = parser.parse_args()
    rows, run = [], None
    with tempfile.TemporaryDirectory(prefix="n2sr-scale-") as tmp:
        for images in args.images:
            fovs = images // (2 * CAPTURES)
            work = Path(tmp) / f"archive-{images}"
            make_archive(work, fovs)
            plain_seconds, full = snakemake(work, "-n")
            _, grouped = snakemake(work, "-n", "--executor", "slurm", "--jobs", "10", *GROUPS,
                                   "--default-resources", "slurm_account=x", "slurm_partition=y")
            rows.append({"images": images, "fovs": 2 * fovs, "dry_run_s": round(plain_seconds, 1),
                         "jobs": planned_jobs(full), "slurm_jobs_grouped": grouped.count("Group job ")
                         + len(re.findall(r"^rule (?!all:|manifest:)\w+:", grouped, re.M)),
                         "dry_run_s_per_image_ms": round(1000 * plain_seconds / images, 2)})
            print(rows[-1], flush=True)
            if run is None:  # the real run on the smallest archive
                targets = ["--until", "ingest", "reference", "evaluate_noisy"]
                wall, _ = snakemake(work, *targets)
                costs = {}
                for f in (work / "results/benchmarks").rglob("*.tsv"):
                    rule = f.relative_to(work / "results/benchmarks").parts[0]
                    s = float(f.read_text().splitlines()[1].split("\t")[0])
                    costs[rule] = costs.get(rule, 0.0) + s
                run = {"images": images, "wall_s": round(wall, 1), "wall_s_per_image": round(wall / images, 3),
                       "job_seconds_per_image": {r: round(s / images, 3) for r, s in sorted(costs.items())}}
                print(run, flush=True)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "load_before": open("/proc/loadavg").read().split()[:3], "dry_runs": rows, "local_run": run}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale_dag.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Scale of the workflow: dry run and per-image overhead", "",
             f"`benchmarks/scale_dag.py` on {result['machine']}; 2 configurations x FOVs x {CAPTURES} captures of "
             "64x64 PNGs, FOV 1 of each configuration trains, the rest are test FOVs.", "",
             "| images | FOVs | jobs planned | dry run s | ms per image | SLURM jobs with the profile's groups |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['images']} | {r['fovs']} | {r['jobs']} | {r['dry_run_s']} | {r['dry_run_s_per_image_ms']} | "
              f"{r['slurm_jobs_grouped']} |" for r in rows]
    if run:
        lines += ["", f"Local run of ingest, reference and noisy scoring of {run['images']} images on 2 cores: "
                  f"{run['wall_s']} s wall, {run['wall_s_per_image']} s per image; the jobs' own wall time per "
                  f"image: {run['job_seconds_per_image']}."]
    (args.out / "scale_dag.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
