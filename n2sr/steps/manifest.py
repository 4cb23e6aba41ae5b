"""Step `manifest`: ``run.json``, what a run's tables were made by.

A number in ``summary.csv`` is only as good as the trace back to what produced it: the software
versions, the exact config (and its hash, to tell two runs' settings apart at a glance), the
samples, every model (its sha256, where it came from, how its training went) and what each job
cost (Snakemake's benchmark files: wall time, peak memory, CPU time). Reads files only: no
network, so no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from n2sr.io.atomic import atomic_path
from n2sr.io.images import sha256_file
from n2sr.io.provenance import versions

BENCHMARK_COLUMNS = {"s": "seconds", "max_rss": "max_rss_mb", "cpu_time": "cpu_seconds", "mean_load": "mean_load"}


def manifest(out: str | os.PathLike[str], *, config: Mapping[str, Any], samples: pd.DataFrame,
             models: Sequence[str | os.PathLike[str]], benchmarks: str | os.PathLike[str],
             log: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Write ``run.json`` to `out` and return it.

    `models`: each model.pt this run trained (its curve.csv beside it) or adopted.json of a
    model trained before; `benchmarks`: the folder of Snakemake benchmark files,
    ``<rule>/<wildcards...>.tsv``; `log`: where to say what was written.
    """
    record = {
        "versions": versions(),
        "config_sha256": config_sha256(config),
        "config": json.loads(_canonical(config)),
        "samples": json.loads(samples.reset_index(drop=True).to_json(orient="records")),
        "models": [model_record(Path(m)) for m in models],
        "jobs": job_records(Path(benchmarks)),
    }
    record["jobs_by_rule"] = by_rule(record["jobs"])
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    if log is not None:
        Path(log).write_text(f"{out}: {len(record['models'])} models, {len(record['jobs'])} jobs\n", encoding="utf-8")
    return record


def config_sha256(config: Mapping[str, Any]) -> str:
    """The hash of a config's sorted JSON: two runs with the same hash ran the same settings."""
    return hashlib.sha256(_canonical(config).encode()).hexdigest()


def _canonical(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def model_record(path: Path) -> dict[str, Any]:
    """A model's hash, origin and training summary, read from files (no checkpoint unpickled)."""
    if path.name == "adopted.json":
        adopted = json.loads(path.read_text(encoding="utf-8"))
        return {"path": str(path), "origin": "adopted", "source": adopted["source"], "sha256": adopted["sha256"],
                "method": adopted["method"], "steps": adopted.get("steps"), "best_val_loss": adopted.get("best_val")}
    found = {"path": str(path), "origin": "trained", "sha256": sha256_file(path)}
    curve = path.with_name("curve.csv")
    if curve.is_file():
        c = pd.read_csv(curve)
        if len(c):
            last = c.iloc[-1]
            found.update(steps=int(last["step"]), seconds=float(last["seconds"]),
                         final_train_loss=float(last["train_loss"]), best_val_loss=float(c["val_loss"].min()),
                         it_per_s=float(c["step"].iloc[-1] / last["seconds"]) if last["seconds"] > 0 else None)
    return found


def job_records(root: Path) -> list[dict[str, Any]]:
    """One row per benchmark file: the rule, the job's wildcards (its path) and its costs."""
    jobs = []
    for f in sorted(root.rglob("*.tsv")) if root.is_dir() else ():
        table = pd.read_csv(f, sep="\t")
        if not len(table):
            continue
        row = table.iloc[-1]  # with --benchmark-repeats, the last repeat
        rel = f.relative_to(root).with_suffix("")
        job = {"rule": rel.parts[0], "job": "/".join(rel.parts[1:])}
        for column, name in BENCHMARK_COLUMNS.items():
            value = pd.to_numeric(row.get(column), errors="coerce")
            job[name] = None if pd.isna(value) else float(value)
        jobs.append(job)
    return jobs


def by_rule(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per rule: job count, total and longest wall time, largest peak memory."""
    out: dict[str, dict[str, Any]] = {}
    for job in jobs:
        r = out.setdefault(job["rule"], {"jobs": 0, "seconds_total": 0.0, "seconds_max": 0.0, "max_rss_mb": None})
        r["jobs"] += 1
        seconds = job["seconds"] or 0.0
        r["seconds_total"] += seconds
        r["seconds_max"] = max(r["seconds_max"], seconds)
        if job["max_rss_mb"] is not None:
            r["max_rss_mb"] = max(r["max_rss_mb"] or 0.0, job["max_rss_mb"])
    return out
