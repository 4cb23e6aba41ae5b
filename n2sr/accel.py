"""The fast inference path: layout, precision and compilation chosen by measurement.

Measured on the project's 2-core AVX512-BF16 CPU (``benchmarks/speed.py``,
``benchmarks/results/speed.md``):

- bf16 *weights* beat bf16 autocast by 2-3x: autocast re-casts every weight on every
  call and runs the ReLUs, pooling, concatenations and pixel shuffle in fp32.
- channels_last (NHWC) is what oneDNN's convolutions want; NCHW pays a reorder per conv.
- The last U-Net concatenation joins 96 channels with the 1-channel input; a 1-channel
  NCHW tensor makes ``torch.cat`` fall back to NCHW and the next conv reorder ~100
  channels at full resolution, so the input is handed over with NHWC strides.
- ``torch.compile`` (inductor with frozen weights) gains little on CPU: the time is in
  oneDNN's convolutions either way, and each new input shape costs a compilation of
  tens of seconds. So ``compile="auto"`` compiles only on CUDA.

The output is always float32, and the caller's model is never modified (a copy is
converted), so the same module can keep training or be saved afterwards.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from n2sr.device import resolve_precision
from n2sr.model import MULTIPLE, pad_to_multiple

Forward = Callable[[torch.Tensor], torch.Tensor]


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


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to `n` (default: ``available_cpus()``); returns the number."""
    n = n or available_cpus()
    torch.set_num_threads(n)
    return n


def _nhwc_input(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, C, H, W) -> same values in `dtype` with NHWC strides, also when C == 1."""
    n, c, h, w = x.shape
    out = torch.empty((n, h, w, c), dtype=dtype, device=x.device).permute(0, 3, 1, 2)
    return out.copy_(x)


def prepare_for_inference(model: nn.Module, device: torch.device, precision: str = "auto",
                          compile: bool | str = "auto") -> Forward:
    """Return ``f(x: (N, 1, H, W)) -> float32 (N, 1, 2H, 2W)``, the model's forward at its fastest.

    Parameters
    ----------
    model : nn.Module
        An ``N2SRNet`` (or a ``UNet``: any module whose forward pads and crops itself). Not
        modified: a copy is moved to `device`, cast and laid out.
    device : torch.device
    precision : "auto", "bf16" or "fp32"
        As ``n2sr.device.resolve_precision``; bf16 stores the weights in bf16 (not autocast).
    compile : bool or str
        False: eager. True: ``torch.compile`` with dynamic shapes, so differently sized
        planes or tiles reuse one graph instead of recompiling (dynamo gives up and runs
        eager after its recompile limit). A string other than "auto" is passed as the
        compile ``mode`` (e.g. "max-autotune"). "auto": compile on CUDA only (see module
        docstring).
    """
    prec = resolve_precision(precision, device)  # type: ignore[arg-type]
    dtype = torch.bfloat16 if prec == "bf16" else torch.float32
    net = copy.deepcopy(model).eval().requires_grad_(False)
    net = net.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    if compile == "auto":
        compile = device.type == "cuda"
    if compile:
        if isinstance(compile, str):
            net = torch.compile(net, dynamic=True, mode=compile)
        else:  # freezing: weights become constants, prepacked into oneDNN's blocked layouts
            net = torch.compile(net, dynamic=True, options={"freezing": True})

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        xin = _nhwc_input(pad_to_multiple(x.to(device), MULTIPLE), dtype)
        with torch.inference_mode():
            y = net(xin)
        return y[..., : y.shape[-2] * h // xin.shape[-2], : y.shape[-1] * w // xin.shape[-1]].float().contiguous()

    return forward
