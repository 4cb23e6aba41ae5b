"""The workflow on a real one-host SLURM, through snakemake-executor-plugin-slurm.

A session fixture starts SLURM with tests/slurm/slurm-up.sh (Debian's slurm-wlm and munge,
munged/slurmctld/slurmd without systemd, one fake GPU: see that script) and stops the daemons it
started at the end of the session, also when a test fails. The test runs a tiny synthetic archive
once locally and once with `--executor slurm --profile profiles/slurm`, checks that every job
went through SLURM with the profile's and the config's resources (the train job with its GPU
request, read back with `scontrol show job`) and that both runs wrote the same CSVs with the same
numbers and the same denoised pixels (seeded, fp32, 2 threads: training is deterministic). The
SLURM run scatters the test stack (`denoise.part_size`): 3 denoise parts and 3 evaluation parts
per image, as separate SLURM jobs, against one job each in the local run.

Skipped when N2SR_SKIP_SLURM=1, when not root, or when SLURM cannot be installed or started
(the reason names the cause); N2SR_REQUIRE_SLURM=1 turns those skips into failures (for CI).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import NO_SLURM
from n2sr.io import omezarr
from n2sr.io.images import read_image
from pipeline_helpers import tiny_synthetic_config

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
SLURM_DIR = REPO / "tests" / "slurm"
PARTITION = "debug"  # the partition slurm-up.sh creates
THREADS = 2          # torch threads in both runs (OMP_NUM_THREADS), = the rules' threads
SLURM_RUN_TIMEOUT = 600  # s, `timeout -k` around the SLURM run (measured 2.2 min at load 3, 5 min at load 7, on 2 cores)

pytestmark = pytest.mark.slow


def slurm_env(**extra: str) -> dict[str, str]:
    """This process's environment with SLURM's own `scontrol` on PATH (tests/conftest.py puts a
    failing one first for the local-executor tests)."""
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != NO_SLURM)
    return {**os.environ, "PATH": path, **extra}


def _unavailable(reason: str):
    if os.environ.get("N2SR_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM required (N2SR_REQUIRE_SLURM=1) but unavailable: {reason}")
    pytest.skip(reason)


class Cluster:
    """The running test SLURM: its partition, how long it took to start, the daemons we started."""

    def __init__(self, partition: str, up_seconds: float, started: list[str]):
        self.partition, self.up_seconds, self.started = partition, up_seconds, started
        self._stopped = False

    def stop(self) -> str:
        """Stop the daemons this session started (once; from the fixture's teardown, else atexit)."""
        if self._stopped or not self.started:
            return ""
        self._stopped = True
        down = subprocess.run(["bash", str(SLURM_DIR / "slurm-down.sh"), *self.started],
                              capture_output=True, text=True, timeout=120, env=slurm_env())
        return down.stdout + down.stderr


@pytest.fixture(scope="session")
def slurm():
    """A running one-host SLURM (tests/slurm/slurm-up.sh). Stops only the daemons it started,
    at the end of the session, whatever the tests' outcome."""
    if os.environ.get("N2SR_SKIP_SLURM") == "1":
        pytest.skip("N2SR_SKIP_SLURM=1")
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        _unavailable("starting a test SLURM needs root on Linux (apt-get, munged, slurmctld, slurmd)")
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        _unavailable("SLURM is not installed and there is no apt-get to install slurm-wlm/munge")
    start = time.monotonic()
    try:
        up = subprocess.run(["bash", str(SLURM_DIR / "slurm-up.sh")], capture_output=True, text=True,
                            timeout=900, env=slurm_env(N2SR_SLURM_PARTITION=PARTITION))
    except subprocess.TimeoutExpired:
        # the script stops what it started only when it gets to fail; stop everything it recorded
        subprocess.run(["bash", str(SLURM_DIR / "slurm-down.sh")], capture_output=True, text=True, env=slurm_env())
        _unavailable("tests/slurm/slurm-up.sh did not finish within 900 s")
    if up.returncode != 0:
        # slurm-up.sh has already stopped whatever it started before failing
        what = {2: "not root", 3: "slurm-wlm/munge cannot be installed", 4: "the SLURM daemons fail"}
        _unavailable(f"tests/slurm/slurm-up.sh exited {up.returncode} "
                     f"({what.get(up.returncode, 'error')}):\n{up.stderr[-3000:]}")
    started = re.findall(r"^N2SR_SLURM_STARTED=(.*)$", up.stdout, re.M)[-1].split()
    cluster = Cluster(PARTITION, time.monotonic() - start, started)
    print(f"\nSLURM up in {cluster.up_seconds:.1f} s; started: {' '.join(started) or 'nothing (already running)'}")
    # Teardown also when pytest is ended by SIGTERM (a CI timeout) or exits without finalizers.
    atexit.register(cluster.stop)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        # unwind: the test's finally stops its Snakemake runs (which scancel their jobs), then
        # this fixture's finally (or atexit) stops the daemons
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield cluster
    finally:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)
        print(cluster.stop())


# -- the tiny archive ------------------------------------------------------------------------

PARTS = 3  # jobs the SLURM run scatters the test stack's denoise and each evaluation over


def write_tiny_run(work: Path, part_size: int | None = None) -> None:
    """The end-to-end test's tiny archive (tests/test_workflow.py), sized for a few seconds per job.

    fp32 everywhere and an iteration cap far below the time cap: both runs train exactly the
    same number of steps with the same arithmetic. Blocks of one 64x64 plane, three test captures.
    """
    work.mkdir(parents=True)
    config = tiny_synthetic_config(work, "archive")
    config["test_captures"] = [0, 1, 2]
    config["train"].update(iterations=60, minutes=20, patch_size=32, val_every=30, checkpoint_every=30,
                           precision="fp32", device="auto")
    config["denoise"].update(tile_size=32, block_size=64, write_sr=True, write_tiff=True, precision="fp32",
                             device="auto", part_size=part_size)
    config["resources"]["ingest"]["threads"] = 1  # a group of the two FOVs' ingests fits the 2-CPU node
    (work / "config.yaml").write_text(yaml.safe_dump(config))


def run_env() -> dict[str, str]:
    return slurm_env(OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))


class Snakemake:
    """`snakemake` on the repository's workflow in `work`, in the background, under `timeout -k`
    (on SIGTERM Snakemake waits for, or cancels, its running jobs)."""

    def __init__(self, work: Path, *args: str, timeout: float):
        cmd = ["timeout", "-k", "15", str(int(timeout)), str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"),
               "--configfile", "config.yaml", "--directory", str(work), *args]
        self.log = work / "snakemake.out"
        self.start = time.monotonic()
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT, text=True,
                                         env=run_env())
        self.timeout = timeout

    def stop(self) -> None:
        """SIGTERM if still running (Snakemake then cancels its SLURM jobs with scancel)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait(self) -> tuple[int, str, float]:
        """(exit code, stdout+stderr, seconds)."""
        try:
            code = self.proc.wait(timeout=self.timeout + 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code, self.log.read_text(), time.monotonic() - self.start


def slurm_overrides(partition: str) -> list[str]:
    """Command-line settings on top of `--profile profiles/slurm` for this one-host cluster.

    The profile's default resources are kept, with its partition placeholders replaced and no
    account (there is no accounting); without accounting `sacct` fails, so job states come from
    squeue. The GPU request is not overridden: it comes from the config through the rule.
    """
    profile = yaml.safe_load((REPO / "profiles/slurm/config.v8+.yaml").read_text())
    defaults = {k: (partition if k == "slurm_partition" else v)
                for k, v in profile["default-resources"].items() if k != "slurm_account"}
    overrides = [f"{rule}:{k}={partition if k == 'slurm_partition' else v}"
                 for rule, res in (profile.get("set-resources") or {}).items() for k, v in res.items()]
    return ["--default-resources", *(f"{k}={v}" for k, v in defaults.items()),
            *(["--set-resources", *overrides] if overrides else []),
            "--slurm-no-account", "--slurm-status-command", "squeue",
            "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs"]


def submitted_jobs(log: str) -> dict[str, list[str]]:
    """rule (or ``group_<id>`` for a batch of grouped jobs) -> SLURM job ids, from the
    executor's 'submitted with SLURM jobid' lines. A group job logs under
    ``group_<id>_<its rules>`` (the profile's group ids have no underscore)."""
    jobs: dict[str, list[str]] = {}
    for jobid, path in re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.?$", log, re.M):
        rule = next(p[len("rule_"):] if p.startswith("rule_") else "_".join(p.split("_")[:2])
                    for p in Path(path).parts if p.startswith(("rule_", "group_")))
        jobs.setdefault(rule, []).append(jobid)
    return jobs


def scontrol_job(jobid: str) -> dict[str, str]:
    """`scontrol show job` as a dict (finished jobs stay visible for MinJobAge, 900 s here)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", jobid], capture_output=True, text=True, check=True,
                         env=slurm_env()).stdout
    return dict(re.findall(r"(\S+?)=(\S*)", out))


def mem_mb(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([MG]?)", value).groups()
    return int(number) * (1024 if unit == "G" else 1)


CSVS = ["reports/summary.csv", "reports/table.csv", "reports/demo_summary.csv",
        "metrics/noisy/demo/2.csv", "metrics/n2sr/demo/2.csv"]
IMAGES = ["denoised/n2sr/demo/2.zarr", "denoised/n2sr/demo/2.sr.zarr", "denoised/n2sr/demo/2.tif"]


def test_workflow_on_slurm_matches_local_run(slurm, tmp_path, capsys):
    partition = slurm.partition
    t0 = time.monotonic()
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())["resources"]
    profile = yaml.safe_load((REPO / "profiles/slurm/config.v8+.yaml").read_text())

    local, slurm_work = tmp_path / "local", tmp_path / "slurm"
    write_tiny_run(local)
    write_tiny_run(slurm_work, part_size=64 * 64)  # 3 planes of 64x64 (3 blocks): K = 3

    # Both runs at once: the SLURM run spends most of its time in job start-up and status polls,
    # and the results do not depend on timing (iteration cap, fixed threads).
    on_slurm = Snakemake(slurm_work, "--profile", str(REPO / "profiles/slurm"), "--executor", "slurm",
                         *slurm_overrides(partition), timeout=SLURM_RUN_TIMEOUT)
    on_host = Snakemake(local, "--cores", str(THREADS), timeout=600)
    try:
        code, local_out, t_local = on_host.wait()
        assert code == 0, f"local run failed:\n{local_out[-5000:]}"
        code, out, t_slurm = on_slurm.wait()
    finally:  # a failed or interrupted test leaves no Snakemake (nor SLURM job) behind
        on_host.stop()
        on_slurm.stop()
    if code != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}"
                         for p in sorted((slurm_work / ".snakemake/slurm_logs").rglob("*.log")))
        pytest.fail(f"snakemake --executor slurm exited {code} after {t_slurm:.0f} s"
                    f"{' (timeout)' if code in (124, 137) else ''}:\n{out[-6000:]}\n{logs[-6000:]}")

    # Every job of the DAG went through sbatch (the same rules as the local run), none ran in
    # the Snakemake process itself but `all` and the run manifest (a local rule); the profile's
    # groups batch the small per-FOV jobs: one SLURM job for both FOVs' ingests, one for the
    # reference, one for all scores.
    jobs = submitted_jobs(out)
    local_rules = set(re.findall(r"^(?:local)?rule (\w+):$", local_out, re.M)) - {"all", "manifest"}
    assert {"train", "denoise", "evaluate", "summarize"} <= local_rules, local_out[-3000:]
    grouped = {"ingest": "group_ingest", "reference": "group_reference", "evaluate_noisy": "group_evaluate",
               "evaluate": "group_evaluate"}
    expected = {grouped.get(r, r) for r in local_rules} | {"denoise_prepare", "denoise_part", "evaluate_part"}
    assert set(jobs) == expected, out[-5000:]
    assert len(jobs["group_ingest"]) == len(jobs["group_reference"]) == len(jobs["group_evaluate"]) == 1, jobs
    assert not re.search(r"^localrule (?!all:|manifest:)", out, re.M), out[-5000:]
    # The scattered stack: prepare, 3 parts and the gathering denoise job; 3 evaluation parts per image.
    assert (len(jobs["denoise_prepare"]), len(jobs["denoise_part"]), len(jobs["evaluate_part"])) == (1, PARTS, 2 * PARTS)
    for part in map(scontrol_job, jobs["denoise_part"]):
        assert part["JobState"] == "COMPLETED" and part["ExitCode"] == "0:0", part
        assert int(part["NumCPUs"]) == config["denoise"]["threads"], part
    assert [r["blocks"] for r in omezarr.read_attrs(slurm_work / "results" / IMAGES[0])["parts"]] == [[0, 1], [1, 2], [2, 3]]

    # The submitted jobs, read back from slurmctld: partition, CPUs, memory, time and GPUs as the
    # profile (defaults) and the config (train/denoise resources) ask.
    (train_id,), (denoise_id,) = jobs["train"], jobs["denoise"]
    train, denoise = scontrol_job(train_id), scontrol_job(denoise_id)
    for job in (train, denoise):
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["Partition"] == partition, job
    assert train["Comment"] == "rule_train_wildcards_demo", train
    # --gpus=1 from resources.train.gpu: TresPerJob=gres:gpu:1 (SLURM 22.05; gres/gpu:1 or
    # gres/gpu=1 in later versions), granted on the node's one fake GPU.
    assert re.fullmatch(r"gres[:/]gpu[:=]1", train.get("TresPerJob", "")), train
    assert not re.search(r"gpu", denoise.get("TresPerJob", "") or ""), denoise  # resources.denoise.gpu: 0
    assert int(train["NumCPUs"]) == config["train"]["threads"], train
    assert int(denoise["NumCPUs"]) == config["denoise"]["threads"], denoise
    assert mem_mb(train["MinMemoryNode"]) == config["train"]["mem_mb"], train
    assert mem_mb(denoise["MinMemoryNode"]) == config["denoise"]["mem_mb"], denoise
    assert train["TimeLimit"] == f"00:{config['train']['runtime']:02d}:00", train
    # A group job (the two FOVs' ingests, side by side) asks for the sum of its members' CPUs and
    # memory (the profile's set-resources) and their longest runtime (the default-resources').
    ingest = scontrol_job(jobs["group_ingest"][0])
    assert int(ingest["NumCPUs"]) == 2, ingest  # two ingests of one thread each (write_tiny_run)
    assert mem_mb(ingest["MinMemoryNode"]) == 2 * profile["set-resources"]["ingest"]["mem_mb"], ingest
    assert ingest["TimeLimit"] == f"00:{profile['default-resources']['runtime']:02d}:00", ingest
    # The job step that ran inside that allocation: the train rule with the config's resources.
    train_log = (slurm_work / ".snakemake/slurm_logs/rule_train/demo" / f"{train_id}.log").read_text()
    assert "rule train:" in train_log and re.search(r"resources: .*\bgpu=1\b", train_log), train_log[-3000:]

    # Same outputs, same numbers: CSVs exactly equal, denoised pixels bitwise equal.
    for name in CSVS:
        a, b = (pd.read_csv(w / "results" / name) for w in (local, slurm_work))
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)
    curve_a, curve_b = (pd.read_csv(w / "results/models/demo/curve.csv") for w in (local, slurm_work))
    timeless = [c for c in curve_a.columns if not re.search(r"time|second|elapsed|wall|per_s", c)]
    pd.testing.assert_frame_equal(curve_a[timeless], curve_b[timeless], check_exact=True, obj="curve.csv")
    for name in IMAGES:
        a, b = (np.asarray(read_image(w / "results" / name)) for w in (local, slurm_work))
        assert a.shape == b.shape and np.array_equal(a, b), name
    # (Denoising quality is test_workflow.py's end-to-end test; 60 iterations only need to be
    # the same 60 iterations in both runs.)
    summary = pd.read_csv(slurm_work / "results/reports/summary.csv")
    assert sorted(summary["method"]) == ["n2sr", "noisy"] and np.isfinite(summary["psnr_mean"]).all(), summary

    total = time.monotonic() - t0
    with capsys.disabled():
        print(f"\n[test_slurm] SLURM run {t_slurm:.1f} s ({sum(map(len, jobs.values()))} sbatch jobs), "
              f"local run {t_local:.1f} s (concurrently), test {total:.1f} s, SLURM start-up {slurm.up_seconds:.1f} s; "
              f"train job {train_id}: TresPerJob={train['TresPerJob']} NumCPUs={train['NumCPUs']} "
              f"MinMemoryNode={train['MinMemoryNode']} TimeLimit={train['TimeLimit']}")
