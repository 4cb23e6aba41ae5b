"""Fault injection on a tiny archive (local executor): hard kills, a failing first attempt, a job
killed while writing. Every faulty run must end, once rerun, with exactly the outputs of an
uninterrupted run, without redoing finished jobs.

Runs are pinned to one CPU (one torch thread) and fp32, so two runs give bit-identical results.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline_helpers import (
    assert_same_outputs,
    group_alive,
    job_resources,
    jobs_run,
    kill_group,
    outputs_of,
    snakemake,
    start_snakemake,
    tiny_config,
    wait_for,
    write_config,
    write_fov,
    write_sheet,
    zarr_array,
)

pytestmark = pytest.mark.slow

MODEL = "results/models/demo/model.pt"
DENOISED = "results/denoised/n2sr/demo/2.zarr"
ARGS = ("--configfile", "config.yaml", "--cores", "2")


def make_work(work: Path) -> Path:
    """Archive (train FOV 1: 3 x 64x64; test FOV 2: 4 x 128x128 with a clean reference), sheet, config.

    100 iterations with a resume state every 10 leave time to kill training after a checkpoint;
    val_every = checkpoint_every, so a resumed curve equals an uninterrupted one. Denoising blocks
    of one plane (block_size 128), so a scattered run can cut the test FOV into parts.
    """
    work.mkdir(parents=True, exist_ok=True)
    write_fov(work / "archive", "1", seed=1)
    write_fov(work / "archive", "2", shape=(4, 128, 128), seed=2)
    write_sheet(work / "samples.tsv", [("demo", "1", "archive/1.tif", "", "train"),
                                       ("demo", "2", "archive/2.tif", "archive/2_ref.tif", "test")])
    config = tiny_config("samples.tsv", iterations=100, val_every=10, checkpoint_every=10)
    config["denoise"]["block_size"] = 128
    write_config(work, config)
    return work


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """An uninterrupted run: the outputs every faulty run must reproduce."""
    work = make_work(tmp_path_factory.mktemp("baseline"))
    run = snakemake(work, *ARGS)
    assert run.returncode == 0, run.stdout
    return work


def copy_run(baseline: Path, dest: Path) -> Path:
    """A copy of the finished baseline run (outputs, logs and Snakemake's metadata)."""
    shutil.copytree(baseline, dest, symlinks=True)
    return dest


def incomplete(work: Path) -> set[str]:
    """Outputs Snakemake marked incomplete (jobs running when it was killed): markers named by
    the path's urlsafe base64, split into '@'-prefixed folders when long."""
    root = work / ".snakemake/incomplete"
    marked = set()
    for f in root.rglob("*") if root.is_dir() else ():
        if f.is_file():
            parts = [part.lstrip("@") for part in f.relative_to(root).parts]
            marked.add(base64.urlsafe_b64decode("".join(parts)).decode())
    return marked


def finished_outputs(work: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every output of a finished job; rewritten outputs change both."""
    found, running = {}, incomplete(work)
    for rel, p in outputs_of(work / "results").items():
        if f"results/{rel}" not in running and not rel.endswith(".state"):
            st = p.stat()
            found[rel] = (st.st_ino, st.st_mtime_ns)
    return found


def assert_kept(before: dict[str, tuple[int, int]], work: Path) -> None:
    after = finished_outputs(work)
    redone = [rel for rel, stamp in before.items() if after.get(rel) != stamp]
    assert not redone, f"finished outputs were rewritten: {redone}"


def kill_when(work: Path, condition, what: str, log: Path) -> str:
    """Start the workflow, SIGKILL its whole process group once `condition()` holds; its output."""
    proc = start_snakemake(work, *ARGS, log=log)
    try:
        wait_for(condition, timeout=300, what=what, proc=proc, interval=0.01)
    finally:
        kill_group(proc)
    wait_for(lambda: not group_alive(proc.pid), timeout=30, what="every process of the workflow to end")
    assert proc.returncode == -signal.SIGKILL
    return log.read_text()


def test_kill_9_during_training_then_denoising_resumes_to_identical_outputs(baseline, tmp_path):
    work = make_work(tmp_path / "killed")
    state = work / (MODEL + ".state")

    # 1. kill -9 once training has written its first resume state
    kill_when(work, state.exists, "the first training checkpoint", tmp_path / "run1.log")
    assert not (work / MODEL).exists()
    kept = finished_outputs(work)
    assert "ingest/demo/1.zarr" in kept

    # 2. rerun (after --unlock): training resumes; kill -9 as soon as denoising has started
    assert snakemake(work, "--unlock", *ARGS).returncode == 0
    out2 = kill_when(work, lambda: (work / "logs/denoise/demo/2.log").exists(), "denoising to start",
                     tmp_path / "run2.log")
    resumed = re.search(r"resumed at step (\d+)", (work / "logs/train/demo.log").read_text())
    assert resumed and int(resumed.group(1)) > 0, (work / "logs/train/demo.log").read_text()
    assert "rule train:" in out2
    assert ("ingest", "configuration=demo, fov=1") not in jobs_run(out2), out2
    assert_kept(kept, work)
    assert not (work / DENOISED).exists()
    kept = finished_outputs(work)
    assert "models/demo/model.pt" in kept

    # 3. rerun to the end: nothing finished is redone, everything equals the uninterrupted run
    assert snakemake(work, "--unlock", *ARGS).returncode == 0
    run3 = snakemake(work, *ARGS)
    assert run3.returncode == 0, run3.stdout
    rules3 = {rule for rule, _ in jobs_run(run3.stdout)}
    assert "denoise" in rules3 and not rules3 & {"ingest", "reference", "train"}, rules3
    assert_kept(kept, work)
    compared = assert_same_outputs(baseline / "results", work / "results")
    assert {"models/demo/model.pt", "models/demo/curve.csv", "denoised/n2sr/demo/2.zarr",
            "metrics/n2sr/demo/2.csv", "reports/summary.csv"} <= set(compared)


# Test-only fault: bash sources $BASH_ENV before each job's shell command, so this function
# shadows the `n2sr` executable. The first `n2sr denoise` call fails as an out-of-memory kill
# would (exit 137); every call is recorded.
FAIL_FIRST_DENOISE = r"""
n2sr() {
    echo "n2sr $*" >> "$N2SR_TEST_CALLS"
    if [ "$1" = denoise ] && [ ! -e "$N2SR_TEST_CALLS.failed" ]; then
        touch "$N2SR_TEST_CALLS.failed"
        echo "injected failure of the first attempt" >&2
        return 137
    fi
    command n2sr "$@"
}
"""


def test_failed_first_attempt_succeeds_on_retry_with_scaled_resources(baseline, tmp_path):
    work = copy_run(baseline, tmp_path / "retry")
    hook, calls = tmp_path / "bash_env.sh", tmp_path / "calls.txt"
    hook.write_text(FAIL_FIRST_DENOISE)
    run = snakemake(work, DENOISED, "--forcerun", "denoise", "--retries", "1", *ARGS,
                    extra_env={"BASH_ENV": str(hook), "N2SR_TEST_CALLS": str(calls)})
    assert run.returncode == 0, run.stdout
    attempts = [line for line in calls.read_text().splitlines() if line.startswith("n2sr denoise")]
    assert len(attempts) == 2, attempts
    assert [int(re.search(r"--attempt (\d+)", a).group(1)) for a in attempts] == [1, 2], attempts
    resources = job_resources(run.stdout, "denoise")
    assert [r["mem_mb"] for r in resources] == ["2000", "4000"], resources
    # the step halves the configured tile (64) for the retry, and records what it used
    from n2sr.io import omezarr

    attrs = omezarr.read_attrs(work / DENOISED)
    assert (attrs["attempt"], attrs["tile_size"]) == (2, 32), attrs
    # overlap "exact": the retry's smaller tiles give the first attempt's output bit for bit
    np.testing.assert_array_equal(zarr_array(work / DENOISED), zarr_array(baseline / DENOISED))


def test_denoise_killed_while_writing_leaves_no_accepted_output(baseline, tmp_path):
    work = copy_run(baseline, tmp_path / "torn")
    # remove the denoised outputs and everything made from them, so the denoise job runs again
    for rel in (DENOISED, DENOISED.replace(".zarr", ".sr.zarr"), DENOISED.replace(".zarr", ".tif"),
                "results/metrics/n2sr/demo/2.csv", "results/reports"):
        p = work / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    folder = (work / DENOISED).parent

    def writing():
        """The temporary sibling of the denoised Zarr, once a chunk of it is on disk."""
        for tmp in folder.glob(".2.zarr.tmp-*"):
            if any(p.is_file() for p in (tmp / "0").rglob("*")) if (tmp / "0").is_dir() else False:
                return tmp
        return None

    # kill -9 the n2sr denoise process mid-write, and Snakemake with it (its process group), so
    # nothing can clean up after it
    proc = start_snakemake(work, *ARGS, log=tmp_path / "torn.log")
    try:
        tmp = wait_for(writing, timeout=300, what="the denoised Zarr to be half-written", proc=proc, interval=0.005)
        pid = int(tmp.name.rsplit("-", 2)[1])  # .<name>.tmp-<host>-<pid>-<random>
        os.kill(pid, signal.SIGKILL)
    finally:
        kill_group(proc)
    wait_for(lambda: not group_alive(proc.pid), timeout=30, what="every process of the workflow to end")

    assert tmp.is_dir(), "the killed job's partial output stays under its temporary name"
    assert not (work / DENOISED).exists()
    # not accepted by Snakemake (the job is to be run again) nor by a later step
    assert snakemake(work, "--unlock", *ARGS).returncode == 0
    dry = snakemake(work, "-n", *ARGS)
    assert ("denoise", "configuration=demo, fov=2") in jobs_run(dry.stdout), dry.stdout
    later = subprocess.run([str(Path(sys.executable).parent / "n2sr"), "evaluate", "--reference",
                            "results/reference/demo/2.zarr", DENOISED], cwd=work, capture_output=True, text=True)
    assert later.returncode == 1 and f"{DENOISED}: no such file or directory" in later.stderr, later.stderr

    run = snakemake(work, *ARGS)
    assert run.returncode == 0, run.stdout
    np.testing.assert_array_equal(zarr_array(work / DENOISED), zarr_array(baseline / DENOISED))
    assert (work / "results/metrics/n2sr/demo/2.csv").is_file()


# Test-only fault: the first `n2sr denoise --part 3/3` is SIGKILLed once it has written its first
# chunk (capture 2; it has captures 2 and 3 to do), before its marker.
KILL_PART_3 = r"""
n2sr() {
    if [ "$1" = denoise ] && [[ " $* " == *" --part 3/3 "* ]] && [ ! -e "$N2SR_TEST_KILLED" ]; then
        touch "$N2SR_TEST_KILLED"
        command n2sr "$@" &
        local pid=$!
        while [ ! -e "$N2SR_TEST_CHUNK" ] && kill -0 $pid 2>/dev/null; do sleep 0.005; done
        kill -KILL $pid
        wait $pid
        return $?
    fi
    command n2sr "$@"
}
"""


def test_scattered_stack_killed_part_is_redone_alone_and_output_equals_one_job(baseline, tmp_path):
    """denoise.part_size: the test FOV (4 one-plane blocks) is denoised by 3 parts and scored by 3
    parts per image. Part 3 is SIGKILLed mid-write: no output appears, and the rerun redoes part 3
    alone (parts 1 and 2 keep their chunk files: same inode and mtime). The result equals the
    single-job run bit for bit, CSVs included."""
    import yaml

    from n2sr.io import omezarr, parts

    work = copy_run(baseline, tmp_path / "scattered")
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["denoise"]["part_size"] = 128 * 128 * 4 // 3 + 1  # 4 planes of 128x128 in 3 parts
    config["resources"]["denoise"]["gpu"] = 1  # asked by the parts, and by the gather for the estimates
    write_config(work, config)
    # the single job's denoised outputs and scores, so none is there before the gather; the run
    # stops at the scores (the reports stay the copied ones: summaries take seconds per job)
    scores = ["results/metrics/n2sr/demo/2.csv", "results/metrics/noisy/demo/2.csv"]
    for rel in (DENOISED, DENOISED.replace(".zarr", ".sr.zarr"), DENOISED.replace(".zarr", ".tif"), *scores):
        p = work / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    partial = parts.partial(work / DENOISED, work / DENOISED)
    hook = tmp_path / "bash_env.sh"
    hook.write_text(KILL_PART_3)
    env = {"BASH_ENV": str(hook), "N2SR_TEST_KILLED": str(tmp_path / "killed"),
           "N2SR_TEST_CHUNK": str(partial / "0/c/2/0/0/0/0")}
    first = snakemake(work, *scores, *ARGS, "--keep-going", extra_env=env)
    assert first.returncode != 0 and (tmp_path / "killed").exists(), first.stdout
    run1 = jobs_run(first.stdout)
    assert sorted(w for r, w in run1 if r == "denoise_part") == [f"method=n2sr, configuration=demo, fov=2, k={k}, K=3"
                                                           for k in (1, 2, 3)], run1
    assert not (work / DENOISED).exists()  # the output appears only after every part
    done = {k: Path(parts.marker(work / DENOISED, k, 3)).exists() for k in (1, 2, 3)}
    assert done == {1: True, 2: True, 3: False}, done
    chunks = {p.relative_to(partial).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
              for p in (partial / "0/c").rglob("*") if p.is_file()}
    assert {"0/c/0/0/0/0/0", "0/c/1/0/0/0/0", "0/c/2/0/0/0/0"} <= set(chunks), chunks

    second = snakemake(work, *scores, *ARGS)
    assert second.returncode == 0, second.stdout
    assert [r["gpu"] for r in job_resources(first.stdout, "denoise_part")] == ["1"] * 3, first.stdout
    # the gather runs the network for the reference-free estimates (denoise.estimate_draws > 0)
    assert [r["gpu"] for r in job_resources(second.stdout, "denoise")] == ["1"], second.stdout
    run2 = jobs_run(second.stdout)
    assert [w for r, w in run2 if r.startswith("denoise_")] == ["method=n2sr, configuration=demo, fov=2, k=3, K=3"], run2
    final = work / DENOISED
    kept = {c: stamp for c, stamp in chunks.items() if c[len("0/c/"):].startswith(("0/", "1/"))}
    assert {c: ((final / c).stat().st_ino, (final / c).stat().st_mtime_ns) for c in kept} == kept
    assert not parts.folder(final).exists() and not parts.folder(work / "results/metrics/n2sr/demo/2.csv").exists()
    assert [r["blocks"] for r in omezarr.read_attrs(final)["parts"]] == [[0, 1], [1, 2], [2, 4]]
    shutil.rmtree(work / "results/reports/partial")  # the failed first run's partial summary (config/README.md)
    compared = assert_same_outputs(baseline / "results", work / "results")
    assert {DENOISED[len("results/"):], "denoised/n2sr/demo/2.tif", *(c[len("results/"):] for c in scores)} <= set(compared)


def test_a_model_trained_before_replaces_training_and_a_mismatch_is_named(baseline, tmp_path):
    """config models: a second run with only the test FOV reuses the baseline's models folder. It
    trains nothing, leaves the reused checkpoint untouched, records its sha256, and denoises bit
    for bit as the run that trained it. A checkpoint that does not fit the config (another
    normalisation) fails its adopt job with one line naming the file; the rest still completes."""
    import hashlib
    import json

    import yaml

    from n2sr.io import omezarr

    models = baseline / "results/models/demo"
    stamp = (models / "model.pt").stat().st_mtime_ns
    work = make_work(tmp_path / "reuse")
    write_sheet(work / "samples.tsv", [("demo", "2", "archive/2.tif", "archive/2_ref.tif", "test")])
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["models"] = {"demo": str(models)}
    write_config(work, config)
    run = snakemake(work, *ARGS)
    assert run.returncode == 0, run.stdout
    rules = [r for r, _ in jobs_run(run.stdout)]
    assert "adopt" in rules and "train" not in rules, rules
    assert (models / "model.pt").stat().st_mtime_ns == stamp and not (work / "results/models/demo/model.pt").exists()
    record = json.loads((work / "results/models/demo/adopted.json").read_text())
    assert record["sha256"] == hashlib.sha256((models / "model.pt").read_bytes()).hexdigest()
    assert omezarr.read_attrs(work / DENOISED)["model_sha256"] == record["sha256"]
    assert np.array_equal(zarr_array(work / DENOISED), zarr_array(baseline / DENOISED))

    config["train"]["normalization"] = "meanstd"  # the reused model was trained with range
    write_config(work, config)
    shutil.rmtree(work / "results")
    bad = snakemake(work, *ARGS, "--keep-going")
    assert bad.returncode != 0
    line = (work / "logs/adopt/demo.log").read_text().strip().splitlines()[-1]
    assert line == (f"n2sr: error: {models / 'model.pt'}: was trained with normalization range; this run's "
                    "train.normalization is meanstd: set it to match or retrain"), line
    assert (work / "results/metrics/noisy/demo/2.csv").is_file()  # what needs no model still ran
