"""Device, precision and thread count: decided here and nowhere else.

Training and inference ask `pick_device` and `resolve_precision` once per run, so a run on a
GPU node of the cluster and a run on a laptop CPU differ only by what these return. bf16
means bf16 autocast in training (fp32 master weights) and bf16 weights at inference
(`n2sr.nn.inference`), never both.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Literal

import torch

from n2sr.config import Precision
from n2sr.cpus import available_cpus


def pick_device(requested: str = "auto") -> torch.device:
    """Return CUDA when present (or when asked for), else the CPU.

    An explicit request for a device that is not there fails loudly instead of
    silently falling back, because an overnight run on the wrong device is hours lost.
    """
    if requested in ("", "auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available on this machine")
    return device


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX)."""
    check = getattr(torch.backends.cpu, "get_cpu_capability", None)
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        pass
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    return bool(check and check() == "AMX")


def resolve_precision(precision: Precision, device: torch.device) -> Literal["bf16", "fp32"]:
    """Turn `auto` into bf16 where the hardware runs it natively, fp32 elsewhere."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


@contextlib.contextmanager
def autocast(device: torch.device, precision: Literal["bf16", "fp32"]) -> Iterator[None]:
    """bf16 autocast for the forward pass; a no-op for fp32."""
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to `n` (default: ``available_cpus()``); returns the number."""
    n = n or available_cpus()
    torch.set_num_threads(n)
    return n
