"""A growing archive, run every night: only what new FOVs need runs, and finished outputs keep
their files (mtimes). Adding a test FOV runs its ingest, reference, denoise and evaluate jobs and
the summaries; adding a train FOV retrains that configuration alone; with train.retrain: never a
configuration whose model exists is never retrained."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from n2sr.io import checkpoints
from pipeline_helpers import jobs_run, outputs_of, snakemake, tiny_config, write_config, write_fov, write_sheet

pytestmark = pytest.mark.slow
ARGS = ("--configfile", "config.yaml", "--cores", "2")
PER_FOV = {"ingest", "reference", "denoise", "evaluate", "evaluate_noisy"}
REPORTS = {"summarize", "crops", "manifest", "all"}


def stamps(work: Path) -> dict[str, int]:
    """mtimes of the outputs (the jobs' benchmark records aside: a rerun job rewrites its own)."""
    return {rel: p.stat().st_mtime_ns for rel, p in outputs_of(work / "results").items()
            if not rel.startswith("benchmarks/")}


def night(work: Path, rows: list[tuple], config: dict) -> list[tuple[str, str]]:
    """One night's run over the sheet `rows`; the jobs it ran."""
    write_sheet(work / "samples.tsv", rows)
    write_config(work, config)
    run = snakemake(work, *ARGS)
    assert run.returncode == 0, run.stdout
    return jobs_run(run.stdout)


def test_a_growing_archive_reruns_only_what_new_fovs_need(tmp_path):
    work = tmp_path / "nightly"
    for i, name in enumerate(["a1", "a2", "a3", "a4", "a5", "b1", "b2", "b3"]):
        write_fov(work / "archive", name, seed=i)
    row = lambda c, f, split: (c, f, f"archive/{c.lower()}{f}.tif",  # noqa: E731
                               f"archive/{c.lower()}{f}_ref.tif" if split == "test" else "", split)
    rows = [row("A", "1", "train"), row("A", "2", "test"), row("B", "1", "train"), row("B", "2", "test")]
    config = tiny_config("samples.tsv", iterations=20, val_every=10, checkpoint_every=10)
    config["denoise"].update(write_sr=False, write_tiff=False)
    first = night(work, rows, config)
    assert sorted(w for r, w in first if r == "train") == ["configuration=A", "configuration=B"], first

    # a new test FOV of A: its own jobs and the summaries, nothing else
    before = stamps(work)
    ran = night(work, rows + [row("A", "3", "test")], config)
    assert {r for r, _ in ran} <= PER_FOV | REPORTS, ran
    assert all("fov=3" in w for r, w in ran if r in PER_FOV) and ("denoise", "configuration=A, fov=3") in ran, ran
    after = stamps(work)
    changed = {rel for rel in before if after[rel] != before[rel]}
    assert changed <= {rel for rel in before if rel.startswith("reports/")}, changed
    rows.append(row("A", "3", "test"))

    # a new train FOV of B: B retrains (and its test FOV is denoised again), A keeps every file
    before = stamps(work)
    ran = night(work, rows + [row("B", "3", "train")], config)
    assert [w for r, w in ran if r == "train"] == ["configuration=B"], ran
    after = stamps(work)
    changed = {rel for rel in before if after[rel] != before[rel] and not rel.startswith("reports/")}
    assert changed and all("/B/" in f"/{rel}" for rel in changed), changed
    assert "models/B/model.pt" in changed and "denoised/n2sr/B/2.zarr" in changed
    rows.append(row("B", "3", "train"))

    # frozen models: a new train FOV of A retrains nothing, and a new test FOV uses A's model as is
    config["train"]["retrain"] = "never"
    before = stamps(work)
    ran = night(work, rows + [row("A", "4", "train"), row("A", "5", "test")], config)
    assert not [r for r, _ in ran if r not in PER_FOV | REPORTS], ran
    assert ("denoise", "configuration=A, fov=5") in ran and all("fov=5" in w for r, w in ran if r in PER_FOV), ran
    after = stamps(work)
    assert {rel for rel in before if after[rel] != before[rel]} <= {rel for rel in before if rel.startswith("reports/")}


def test_every_configuration_fine_tunes_the_generic_model(tmp_path):
    """train.init: generic: the generic model trains once on every configuration's train FOVs,
    each configuration's model starts from it (its sha256 recorded), and a second night has
    nothing to do."""
    work = tmp_path / "generic"
    for i, name in enumerate(["a1", "a2", "b1", "b2"]):
        write_fov(work / "archive", name, seed=i)
    rows = [(c, f, f"archive/{c.lower()}{f}.tif", f"archive/{c.lower()}{f}_ref.tif" if f == "2" else "",
             "test" if f == "2" else "train") for c in "AB" for f in "12"]
    config = tiny_config("samples.tsv", iterations=20, val_every=10, checkpoint_every=10, init="generic")
    config["generic"] = {"configurations": [], "iterations": 30, "minutes": None}
    config["denoise"].update(write_sr=False, write_tiff=False)
    ran = night(work, rows, config)
    assert [r for r, _ in ran].count("train_generic") == 1, ran
    assert sorted(w for r, w in ran if r == "train") == ["configuration=A", "configuration=B"], ran
    generic = work / "results" / "generic" / "model.pt"
    assert checkpoints.load(generic)["steps"] == 30
    for name in "AB":
        tuned = checkpoints.load(work / "results" / "models" / name / "model.pt")
        assert tuned["init"] == {"path": "results/generic/model.pt",
                                 "sha256": hashlib.sha256(generic.read_bytes()).hexdigest()}, tuned["init"]
    manifest = json.loads((work / "results" / "reports" / "run.json").read_text())
    assert "results/generic/model.pt" in [m["path"] for m in manifest["models"]], manifest["models"]
    again = snakemake(work, *ARGS)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout, again.stdout
