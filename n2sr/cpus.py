"""How many CPUs this process may use, without importing torch (ingest's threads ask it too)."""

from __future__ import annotations

import math
import os
from pathlib import Path


def available_cpus() -> int:
    """CPUs this process may really use: SLURM's allocation, the affinity mask, the cgroup quota.

    ``os.cpu_count()`` reports the whole node; on a shared node that oversubscribes the
    cores we were given, and oversubscribed OpenMP threads slow every conv down.
    """
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n
