"""Data safety: nothing a user owns is deleted or overwritten by the workflow or a step.

- A user's folder named as `synthetic.root` is refused, not emptied, under `--forceall` and
  `-R synth`; a generated archive is rerun file by file, keeping the files a user added to it;
  `make clean` removes what the workflow generated and nothing else (checked file by file).
- Roots the workflow writes must lie inside the working directory.
- An output is never an input, nor inside one (also through a symlink): `n2sr denoise` refuses.
- Two writers of sibling outputs in one folder lose nothing; a checkpoint write killed with
  SIGKILL leaves the previous checkpoint loadable, and its temporary goes with the next write.
- A successful run that does not produce the summary keeps the partial report.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline_helpers import REPO, SNAKEMAKE, snakemake, tiny_synthetic_config, wait_for, write_fov

N2SR = Path(sys.executable).parent / "n2sr"


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root` (hidden ones too): relative path -> (content, mtime_ns)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def user_files(folder: Path) -> dict[str, bytes]:
    """A user's folder: files at the top, nested, and one named like a generated file."""
    files = {"thesis.txt": b"precious", "data/run1.csv": b"a,b\n1,2\n", "demo/raw/1/capture_00.tif": b"my own tif",
             "manifest.txt": b"not ours"}
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return files


def synth_work(work: Path, root: str) -> Path:
    """A working directory whose config generates the tiny demo archive under `root`."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(tiny_synthetic_config(work, root)))
    return work


ARGS = ("--configfile", "config.yaml", "--cores", "1")


# -- generated folders ----------------------------------------------------------------------

@pytest.mark.parametrize("force", [["--forceall"], ["-R", "synth"], ["--forcerun", "synth"]])
def test_user_folder_as_synthetic_root_survives_forced_reruns(tmp_path, force):
    """The issue's data loss: `synthetic.root: mydata` holding the user's files. Snakemake no
    longer deletes the folder (the rule's output is the manifest inside it), and the step refuses
    to write into a non-empty folder it did not write, with one line naming it."""
    work = synth_work(tmp_path / "work", "mydata")
    user_files(work / "mydata")
    before = snapshot(work / "mydata")
    run = snakemake(work, *ARGS, *force, "--until", "synth")
    assert run.returncode != 0, run.stdout
    assert snapshot(work / "mydata") == before  # file by file: content and mtime
    log = (work / "logs/synth/synth.log").read_text().strip().splitlines()
    assert log == ["n2sr: error: mydata: exists and is not a synthetic archive (not empty, and no .n2sr-files "
                   "record of n2sr synth); refusing to write into it: choose a new or empty folder"], log


def test_generated_archive_reruns_keep_user_files_and_make_clean_removes_only_generated(tmp_path):
    """A generated archive that a user added files to: `-R synth` and `--forceall` rewrite the
    archive's own files only; `make clean` removes the workflow's outputs and the archive's
    files (through its record), and leaves every file of the user's, inside the archive, under
    results/ and under resources/."""
    work = synth_work(tmp_path / "work", "resources/synthetic")
    first = snakemake(work, *ARGS, "--until", "ingest")
    assert first.returncode == 0, first.stdout
    archive = work / "resources/synthetic"
    generated = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*") if p.is_file())
    assert "manifest.csv" in generated and ".n2sr-files" in generated and len(generated) == 2 + 2 * 4
    added = {"resources/synthetic/notes.txt": b"mine", "resources/synthetic/demo/raw/1/notes.txt": b"mine too",
             "resources/mine/data.csv": b"x\n1\n", "results/keep.txt": b"a user's file under results"}
    for rel, data in added.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
    user = {rel: (work / rel).read_bytes() for rel in added}

    for force in (["-R", "synth"], ["--forceall"]):
        run = snakemake(work, *ARGS, *force, "--until", "synth")
        assert run.returncode == 0, run.stdout
        assert ("rule synth:" in run.stdout) or ("localrule synth:" in run.stdout), run.stdout
        assert {rel: (work / rel).read_bytes() for rel in added} == user
        assert sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*") if p.is_file()) == sorted(
            generated + ["notes.txt", "demo/raw/1/notes.txt"])
    assert (work / "results/ingest/demo/1.zarr").is_dir()
    # what training and a killed job leave that Snakemake does not list: resume state, a temporary
    (work / "results/models/demo").mkdir(parents=True)
    (work / "results/models/demo/model.pt.state").write_bytes(b"state")
    (work / "results/ingest/demo/.2.zarr.tmp-host-1-abcd").mkdir()

    clean = subprocess.run(
        ["make", "-f", str(REPO / "Makefile"), "clean",
         f"SNAKEMAKE={SNAKEMAKE} --snakefile {REPO / 'Snakefile'} --configfile config.yaml",
         f"N2SR_PYTHON={sys.executable}"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert clean.returncode == 0, clean.stdout
    left = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
    assert left == sorted(["config.yaml", "samples.tsv", "spec.yaml", *added]), left
    assert {rel: (work / rel).read_bytes() for rel in added} == user
    assert not (work / "logs").exists() and not (work / ".snakemake").exists()


def test_rerun_refuses_a_user_file_where_it_would_write_one(tmp_path):
    """A user's file at a path the generator would newly write (not in its record) is refused,
    by name, before anything is written."""
    from n2sr.steps.synth import make_archive

    spec = {"configurations": {"demo": {"photons": 10.0, "read_sigma": 1.0}}, "fovs": 1, "captures": 2,
            "shape": (32, 32)}
    root = tmp_path / "gen"
    make_archive(root, **spec)
    (root / "demo/raw/1/capture_02.tif").write_bytes(b"mine")
    before = snapshot(root)
    with pytest.raises(ValueError, match=r"capture_02.tif: exists and was not written by n2sr synth"):
        make_archive(root, **{**spec, "captures": 3})
    assert snapshot(root) == before
    # fewer captures: the generator's own surplus file goes, the user's stay
    (root / "demo/raw/1/capture_02.tif").unlink()
    (root / "demo/raw/1/notes.txt").write_bytes(b"mine")
    make_archive(root, **{**spec, "captures": 1})
    assert sorted(p.name for p in (root / "demo/raw/1").iterdir()) == ["capture_00.tif", "notes.txt"]


def test_roots_outside_the_working_directory_are_refused(tmp_path):
    work = synth_work(tmp_path / "work", "../outside")
    run = snakemake(work, *ARGS, "-n")
    assert run.returncode != 0
    assert "config synthetic.root: ../outside lies outside the working directory" in run.stdout, run.stdout
    assert not (tmp_path / "outside").exists()
    (work / "link").symlink_to(tmp_path, target_is_directory=True)  # inside by name, outside in fact
    (work / "config.yaml").write_text(yaml.safe_dump(tiny_synthetic_config(work, "link/gen")))
    run = snakemake(work, *ARGS, "-n")
    assert run.returncode != 0 and "config synthetic.root: link/gen lies outside the working directory" in run.stdout


def test_a_partial_run_keeps_the_partial_report(tmp_path):
    """onsuccess removes results/reports/partial only when the real summary is up to date; a
    successful `--until` run leaves the partial tables of an earlier failed run alone."""
    work = synth_work(tmp_path / "work", "resources/synthetic")
    partial = work / "results/reports/partial"
    partial.mkdir(parents=True)
    (partial / "missing.txt").write_text("results/metrics/n2sr/demo/2.csv\n")
    (partial / "summary.csv").write_text("method,n\nnoisy,1\n")
    run = snakemake(work, *ARGS, "--until", "synth")
    assert run.returncode == 0, run.stdout
    assert sorted(p.name for p in partial.iterdir()) == ["missing.txt", "summary.csv"]


# -- an output is never an input --------------------------------------------------------------

def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model_and_zarr(tmp_path_factory):
    """A tiny trained checkpoint and an ingested OME-Zarr."""
    from n2sr.config import ModelConfig, TrainConfig
    from n2sr.io.planes import select
    from n2sr.steps.ingest import ingest
    from n2sr.steps.train import train_planes

    work = tmp_path_factory.mktemp("guard")
    raw, _ = write_fov(work, "a", shape=(2, 32, 32))
    ingest(raw, work / "a.zarr")
    cfg = TrainConfig(iterations=2, batch_size=2, patch_size=16, val_every=2, val_patches=2, checkpoint_every=2,
                      precision="fp32", device="cpu",
                      model=ModelConfig(features=8, final_features=8, unet_out_channels=8, sr_channels=8))
    planes = list(np.asarray(select(work / "a.zarr", None).read(), np.float32).reshape(-1, 32, 32))
    train_planes(planes, work / "m.pt", cfg, progress=False)
    return work


@pytest.mark.parametrize("output", ["a.zarr", "a.zarr/inner.zarr", "link.zarr", "sub/../a.zarr"])
def test_denoise_refuses_its_input_as_output(model_and_zarr, output):
    work = model_and_zarr
    if not (work / "link.zarr").is_symlink():
        (work / "link.zarr").symlink_to(work / "a.zarr", target_is_directory=True)
    (work / "sub").mkdir(exist_ok=True)
    before = tree_digest(work / "a.zarr")
    run = subprocess.run([str(N2SR), "denoise", "m.pt", "a.zarr", output], cwd=work, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"n2sr: error: {output}: "), lines
    assert ("is the input a.zarr itself" in lines[0]) or ("lies inside the input a.zarr" in lines[0]), lines
    assert tree_digest(work / "a.zarr") == before
    assert not [p for p in work.iterdir() if ".tmp-" in p.name]


def test_steps_refuse_an_output_over_an_input(model_and_zarr, tmp_path):
    """The same guard in every step that writes outputs from inputs."""
    from n2sr.errors import InputError
    from n2sr.steps.bm3d import bm3d
    from n2sr.steps.ingest import ingest
    from n2sr.steps.reference import reference
    from n2sr.steps.train import train

    work = model_and_zarr
    before = tree_digest(work / "a.zarr")
    raw = work / "a.tif"
    calls = [
        lambda: bm3d(work / "a.zarr", work / "a.zarr"),
        lambda: bm3d(work / "a.zarr", tmp_path / "out.zarr", tiff=work / "a.zarr/zarr.json"),
        lambda: reference(work / "a.zarr", work / "a.zarr"),
        lambda: reference(work / "a.zarr", work / "link.zarr"),
        lambda: ingest(raw.parent, work / "sub.zarr"),  # the output would lie inside the input folder
        lambda: train([work / "a.zarr"], work / "a.zarr/model.pt"),
    ]
    if not (work / "link.zarr").is_symlink():
        (work / "link.zarr").symlink_to(work / "a.zarr", target_is_directory=True)
    for call in calls:
        with pytest.raises(InputError, match="input"):
            call()
    assert tree_digest(work / "a.zarr") == before


# -- concurrent writers and killed writers -----------------------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from n2sr.io.atomic import atomic_path
    folder, name, start = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.001)
    for i in range(60):
        with atomic_path(folder / f"{name}-{i}.bin") as tmp:
            tmp.write_bytes(f"{name} {i}".encode() * 1000)
        with atomic_path(folder / f"{name}-{i}.zarr") as tmp:
            tmp.mkdir()
            (tmp / "chunk").write_bytes(f"{name} {i}".encode())
        with atomic_path(folder / f"{name}-shared.bin") as tmp:  # rewritten again and again
            tmp.write_bytes(f"{name} {i}".encode())
""")


def test_two_writers_of_sibling_outputs_in_one_folder_lose_nothing(tmp_path):
    """Two processes writing different outputs into one folder at the same time (each also
    sweeping its targets' stale temporaries) never remove or damage each other's files."""
    folder = tmp_path / "out"
    folder.mkdir()
    start = time.time() + 1.0
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), name, str(start)]) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    for name in ("a", "b"):
        for i in range(60):
            assert (folder / f"{name}-{i}.bin").read_bytes() == f"{name} {i}".encode() * 1000
            assert (folder / f"{name}-{i}.zarr" / "chunk").read_bytes() == f"{name} {i}".encode()
        assert (folder / f"{name}-shared.bin").read_bytes() == f"{name} 59".encode()
    assert len(list(folder.iterdir())) == 2 * (2 * 60 + 1)  # no temporary left behind


KILLED_SAVE = textwrap.dedent("""
    import io, sys, time
    import torch
    from n2sr.io import checkpoints
    real_save = torch.save
    def slow_save(obj, f):  # half the bytes on disk, then stuck: killed mid-write
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        with open(f, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
        open(sys.argv[2], "w").close()
        time.sleep(600)
    torch.save = slow_save
    checkpoints.save(sys.argv[1], {"method": "n2sr", "scale": 2, "model_config": {}, "normalizer": {},
                                   "model": {"w": torch.full((1000,), 2.0)}})
""")


def test_checkpoint_write_killed_leaves_the_previous_loadable_and_no_temporary_after_the_next(tmp_path):
    from n2sr.io import checkpoints

    path = tmp_path / "model.pt"
    old = {"method": "n2sr", "scale": 2, "model_config": {}, "normalizer": {}, "model": {"w": torch.ones(1000)}}
    checkpoints.save(path, old)
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path), str(ready)])
    try:
        wait_for(ready.exists, timeout=120, what="the checkpoint write to start", proc=proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    temporaries = [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.pt.tmp-")]
    assert len(temporaries) == 1 and f"-{proc.pid}-" in temporaries[0], temporaries  # the torn write
    assert torch.equal(checkpoints.load(path)["model"]["w"], torch.ones(1000))  # the previous one, intact

    checkpoints.save(path, {**old, "model": {"w": torch.zeros(1000)}})  # the next run's save
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "ready"]
    assert torch.equal(checkpoints.load(path)["model"]["w"], torch.zeros(1000))
