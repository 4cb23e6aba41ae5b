"""Shared fixtures: where the real data is, and small deterministic settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pipeline_helpers import worker_cpu

REPO = Path(__file__).resolve().parents[1]

# Every `snakemake` start loads the SLURM executor plugin, whose import runs `scontrol show config`
# (10 s timeout) wherever SLURM's client tools are installed. With no controller up (this machine
# once tests/test_slurm.py has installed SLURM, outside that test's run) each start then waits 9 s,
# which the suite's ~100 local-executor starts add up to minutes. Those runs never use SLURM, so
# their PATH finds a `scontrol` that fails at once; tests/test_slurm.py takes it off again.
NO_SLURM = REPO / "tests" / "no_slurm"
os.environ["PATH"] = f"{NO_SLURM}{os.pathsep}{os.environ.get('PATH', '')}"


def data_root() -> Path:
    """Real FMD/W2S images: $N2SR_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("N2SR_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def fmd_root() -> Path:
    root = data_root() / "fmd"
    if not root.is_dir():
        pytest.skip(f"FMD data not found at {root}; set N2SR_DATA to the shared data folder")
    return root


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Each test starts from the same global torch seed."""
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _one_cpu_per_worker(request: pytest.FixtureRequest):
    """Under pytest-xdist, a test that works in-process runs on its worker's own CPU, with one
    torch thread. Else its torch threads (n2sr picks as many as the affinity mask allows) spin
    against the other worker's on the same cores (the FMD training test took 229 s that way, 46 s
    alone, 69 s on one CPU). The end-to-end (`slow`) tests keep every CPU: their Snakemake runs
    pin their own jobs (tests/pipeline_helpers.py) and the SLURM test's daemons must see the
    whole machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if workers < 2 or len(cpus) < 2 or request.node.get_closest_marker("slow"):
        yield
        return
    threads = torch.get_num_threads()
    os.sched_setaffinity(0, [worker_cpu(cpus)])  # the CPU its pinned Snakemake runs use
    torch.set_num_threads(1)
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with end-to-end (`slow`) tests first. The Makefile's `--dist loadfile
    --no-loadscope-reorder` then hands them out before the short files, so both workers end on
    short files instead of one of them running a long end-to-end file alone at the end."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)
