"""batch_size: the per-FOV steps as one job per batch of FOVs (workflow/rules/batches.smk), run by
`n2sr batch` in one process. Batched and per-FOV runs must give the same outputs (n2sr's, which are
bit-reproducible; the bm3d package's are not even between two runs of one command, so BM3D's batches
are checked by the fault test); a batch is the unit that fails, and every member still gets its own log."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from n2sr import cli
from pipeline_helpers import (assert_same_outputs, jobs_run, outputs_of, snakemake, tiny_config, write_config,
                              write_fov, write_sheet)

ARGS = ("--configfile", "config.yaml", "--cores", "2")


def test_batch_runs_every_command_and_fails_if_one_did(tmp_path, capsys):
    """A failing command is logged (naming the file) and the rest still run; the status says so."""
    write_fov(tmp_path, "good")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    jobs = []
    for name in ("good", "bad", "good"):
        out = tmp_path / f"{name}-{len(jobs)}.zarr"
        jobs += ["--job", str(tmp_path / f"logs/{len(jobs)}.log"),
                 f"ingest -- {shlex.quote(str(tmp_path / f'{name}.tif'))} {shlex.quote(str(out))}"]
    assert cli.main(["batch", *jobs]) == 1
    assert (tmp_path / "good-0.zarr").is_dir() and (tmp_path / "good-6.zarr").is_dir()
    assert not (tmp_path / "bad-3.zarr").exists()
    bad_log = (tmp_path / "logs/3.log").read_text()
    assert "bad.tif" in bad_log and "error" in bad_log, bad_log
    assert "error" not in (tmp_path / "logs/0.log").read_text()
    assert "1 of 3 commands failed" in capsys.readouterr().err


def archive(work: Path, bad: str | None = None) -> list[tuple]:
    """A: train FOV 1, test FOVs 2-4; B: train FOV 1, test FOV 2 (64x64, 3 captures each)."""
    rows = []
    for i, (c, f, split) in enumerate([("A", "1", "train"), ("A", "2", "test"), ("A", "3", "test"),
                                       ("A", "4", "test"), ("B", "1", "train"), ("B", "2", "test")]):
        raw, ref = write_fov(work / "archive", f"{c}{f}", seed=i)
        if f"{c}{f}" == bad:
            raw.write_bytes(b"truncated")
        rows.append((c, f, raw.relative_to(work).as_posix(), ref.relative_to(work).as_posix() if split == "test" else "",
                     split))
    write_sheet(work / "samples.tsv", rows)
    return rows


def config(batch_size: int, methods: tuple[str, ...] = ("n2sr",)) -> dict:
    c = tiny_config("samples.tsv", iterations=20, val_every=10, checkpoint_every=10)
    c.update(batch_size=batch_size, methods=list(methods))
    c["denoise"].update(write_sr=True, write_tiff=True)
    return c


@pytest.mark.slow
def test_batches_give_the_per_fov_outputs_in_fewer_jobs(tmp_path):
    runs = {}
    for size in (1, 2):
        work = tmp_path / f"batch-{size}"
        archive(work)
        write_config(work, config(size))
        run = snakemake(work, *ARGS)
        assert run.returncode == 0, run.stdout[-4000:]
        runs[size] = jobs_run(run.stdout)
    compared = assert_same_outputs(tmp_path / "batch-1/results", tmp_path / "batch-2/results")
    assert "denoised/n2sr/A/4.sr.zarr" in compared and "metrics/n2sr/B/2.csv" in compared

    per_fov = [r for r, _ in runs[1] if r in {"ingest", "reference", "denoise", "evaluate", "evaluate_noisy"}]
    batched = [r for r, _ in runs[2] if "_batch_" in r]
    assert len(per_fov) == 6 + 4 * 4  # ingest of 6 FOVs; reference, denoise, 2 scores of 4 test FOVs
    # A's 4 FOVs in 2 ingest batches, B's 2 in 1; A's 3 test FOVs in 2 batches per step, B's 1 in 1
    assert len(batched) == 3 + 3 * 4, runs[2]
    assert not set(per_fov) & {r for r, _ in runs[2]}
    logs = {size: {p.relative_to(tmp_path / f"batch-{size}/logs").as_posix()
                   for p in (tmp_path / f"batch-{size}/logs").rglob("*.log")} for size in (1, 2)}
    assert logs[1] <= logs[2], logs[1] - logs[2]  # each member's own log, where the per-FOV job puts it
    assert "denoise:" in (tmp_path / "batch-2/logs/denoise/A/4.log").read_text()


@pytest.mark.slow
def test_a_bad_file_fails_its_batch_and_the_others_finish(tmp_path):
    work = tmp_path / "bad"
    archive(work, bad="A4")
    write_config(work, config(2, methods=("n2sr", "bm3d")))
    run = snakemake(work, *ARGS, "--keep-going")
    assert run.returncode != 0
    assert re.search(r"Error in rule ingest_batch_0_2", run.stdout), run.stdout[-3000:]
    log = (work / "logs/ingest/A/4.log").read_text()
    assert "archive/A4.tif" in log and "error" in log, log
    done = outputs_of(work / "results")
    # B is untouched by A's bad file: scored by every method; A's FOV 3 shared the bad file's ingest batch
    assert {"metrics/noisy/B/2.csv", "metrics/n2sr/B/2.csv", "metrics/bm3d/B/2.csv", "ingest/A/2.zarr"} <= set(done)
    assert "ingest/A/3.zarr" not in done
    assert (work / "results/reports/partial/missing.txt").is_file()


def test_batches_run_the_per_fov_commands(tmp_path):
    """The batched commands are the per-FOV jobs' commands, settings included (a dry run's -p)."""
    commands = {}
    for size in (1, 3):
        work = tmp_path / f"batch-{size}"
        archive(work)
        c = config(size)
        c["ingest"].update(codec="lz4", clevel=3)
        write_config(work, c)
        run = snakemake(work, *ARGS, "-n", "-p")
        assert run.returncode == 0, run.stdout[-3000:]
        commands[size] = run.stdout
    assert commands[1].count("n2sr ingest  --codec lz4 --clevel 3 -- ") == 6
    assert commands[3].count("'ingest --codec lz4 --clevel 3 -- ") == 6 and "n2sr ingest " not in commands[3]
    # ingest: A's 4 FOVs in 2 batches, B's 2 in 1; reference, denoise and 2 scores: A's 3 and B's 1 test FOVs
    assert commands[3].count("n2sr batch ") == 3 + 4 * 2
