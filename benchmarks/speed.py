"""Speed of the N2SR network on this machine, against the machine's own measured peak.

One run measures (a) matmul and 3x3-conv peaks in fp32 and bf16, (b) network FLOPs per
input pixel, (c) inference megapixels/s on a 512x512 plane per inference path, with
achieved GFLOP/s and achieved/peak (the prepared paths are `n2sr.nn.inference.prepare`, the
pipeline's own), (d) training iterations/s of the real training step: `n2sr.nn.training._step`
on a `_sample_batch` batch of a `_Run`, exactly as `n2sr.nn.training.fit` calls them (batch 16,
128x128 crops -> 64x64 sub-sampled inputs, Adam, complement MSE, channels_last, bf16 autocast or
fp32). Writes speed.json and speed.md.

The cores may be shared with other jobs, so every measurement is the best of several
repeats, and the peaks are measured in each round next to the network, so the ratio
compares numbers taken under the same load.

    .venv/bin/python benchmarks/speed.py [--quick] [--threads N] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from n2sr.config import ModelConfig, TrainConfig
from n2sr.nn.device import autocast, set_threads
from n2sr.nn.inference import prepare
from n2sr.nn.model import build_model
from n2sr.nn.objectives import objective
from n2sr.nn.sampling import PlaneBank
from n2sr.nn.training import _Run, _sample_batch, _step

CPU = torch.device("cpu")


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` timed calls after one warm-up: the least disturbed by other jobs."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def peak_kernels(quick: bool) -> dict[str, tuple[Callable[[], object], float]]:
    """Name -> (call, FLOPs) for the peak probes."""
    n = 2048
    a32 = torch.randn(n, n)
    a16 = a32.bfloat16()
    c, s = 128, 128 if quick else 256
    x = torch.randn(1, c, s, s).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, 3, 3).contiguous(memory_format=torch.channels_last)
    xb, wb = x.bfloat16(), w.bfloat16()
    conv_flops = 2.0 * c * c * 9 * s * s
    return {
        "matmul_fp32": (lambda: torch.mm(a32, a32), 2.0 * n**3),
        "matmul_bf16": (lambda: torch.mm(a16, a16), 2.0 * n**3),
        "conv3x3_fp32": (lambda: F.conv2d(x, w, padding=1), conv_flops),
        "conv3x3_bf16": (lambda: F.conv2d(xb, wb, padding=1), conv_flops),
    }


def flops_per_pixel(cfg: ModelConfig, size: int = 256) -> float:
    """Forward FLOPs (2 per multiply-add) per input pixel, counted by torch's FlopCounterMode."""
    model = build_model(cfg).eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.rand(1, 1, size, size))
    return counter.get_total_flops() / size**2


def inference_paths(cfg: ModelConfig, with_compile: bool) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]]:
    """Name -> (forward, precision of the peak it is compared with)."""
    model = build_model(cfg).eval()

    def fp32_plain(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    def bf16_autocast(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(CPU, "bf16"):
            return model(x).float()

    paths = {
        "fp32 eager NCHW": (fp32_plain, "fp32"),
        "fp32 prepared (NHWC)": (prepare(model, CPU, "fp32", compile=False), "fp32"),
        "bf16 autocast NCHW": (bf16_autocast, "bf16"),
        "bf16 prepared (bf16 weights, NHWC) [default]": (prepare(model, CPU, "bf16", compile=False), "bf16"),
    }
    if with_compile:
        paths["bf16 prepared + torch.compile"] = (prepare(model, CPU, "bf16", compile=True), "bf16")
    return paths


def train_step_fn(cfg: ModelConfig, precision: str, compiled: bool, batch: int = 16, crop: int = 128,
                  planes: int = 4, side: int = 256) -> Callable[[], float]:
    """One Noise2SR training iteration of the real loop, as `n2sr.nn.training.fit` runs it.

    A `_Run` (model in channels_last, Adam, seeded generators) on a `PlaneBank` of `planes` random
    normalised ``(1, side, side)`` planes; each call draws a batch with `_sample_batch` and takes one
    `_step`, so the timing follows the training code instead of a copy of it. ``compiled``
    wraps the run's model in ``torch.compile`` (the optimiser keeps the same parameters); the
    loop itself never compiles.
    """
    train_cfg = TrainConfig(batch_size=batch, patch_size=crop, device="cpu", precision=precision,  # type: ignore[arg-type]
                            model=cfg, whiten=False)  # as recorded: before n2sr.nn.whiten
    obj = objective("n2sr")
    run = _Run(train_cfg, obj, CPU)
    if compiled:
        run.model = torch.compile(run.model)
    run.model.train()
    gen = torch.Generator().manual_seed(0)
    bank = PlaneBank.from_planes([torch.rand(1, side, side, generator=gen) for _ in range(planes)], CPU)

    def step() -> float:
        return _step(run, obj, _sample_batch(bank, train_cfg, run.data_gen), CPU, precision).item()

    return step


def machine() -> dict[str, object]:
    model_name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model_name, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "python": platform.python_version()}


def run(args: argparse.Namespace) -> dict[str, object]:
    set_threads(args.threads)
    cfg = ModelConfig()
    rounds, repeats = (2, 2) if args.quick else (3, 3)
    fpp = flops_per_pixel(cfg)
    plane = torch.rand(1, 1, args.size, args.size)
    plane_flops = fpp * args.size**2

    peaks = peak_kernels(args.quick)
    paths = inference_paths(cfg, with_compile=not args.quick and not args.no_compile)
    compile_s = {}
    for name, (fn, _) in paths.items():  # first call: compilation, prepacking
        t = time.perf_counter()
        fn(plane)
        compile_s[name] = time.perf_counter() - t

    peak_best = {k: 0.0 for k in peaks}
    infer_best = {k: 0.0 for k in paths}
    ratios: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):  # interleave so each ratio pairs numbers taken under the same load
        gflops = {}
        peak_now = {k: 0.0 for k in peaks}
        for _probe in range(2):  # peaks before and after the paths: the load may change meanwhile
            for k, (fn, flops) in peaks.items():  # short kernels: more repeats to find a quiet slot
                peak_now[k] = max(peak_now[k], flops / best_seconds(fn, 4 * repeats) / 1e9)
            if not gflops:
                gflops = {name: plane_flops / best_seconds(lambda: fn(plane), repeats) / 1e9
                          for name, (fn, _) in paths.items()}
        for k, v in peak_now.items():
            peak_best[k] = max(peak_best[k], v)
        for name, (_, prec) in paths.items():
            infer_best[name] = max(infer_best[name], gflops[name])
            ratios[name].append(gflops[name] / max(peak_now[f"matmul_{prec}"], peak_now[f"conv3x3_{prec}"]))

    inference = []
    for name, (_, prec) in paths.items():
        peak = max(peak_best[f"matmul_{prec}"], peak_best[f"conv3x3_{prec}"])
        g = infer_best[name]
        inference.append({"path": name, "precision": prec, "megapixels_per_s": g * 1e9 / plane_flops * args.size**2 / 1e6,
                          "gflops": g, "peak_gflops": peak, "ratio_best_over_best_peak": g / peak,
                          "ratio_same_round_max": max(ratios[name]), "first_call_s": compile_s[name]})

    training = []
    # The real step always runs channels_last (`_Run`, `_step`), so the NCHW rows that the former
    # copy of the step measured have no counterpart; the column stays for the results' format.
    variants = [("fp32", True, False), ("bf16", True, False)]
    if not args.quick and not args.no_compile:
        variants.append(("bf16", True, True))
    train_flops = 3 * fpp * 16 * 64 * 64  # forward + backward ~ 3x forward
    for prec, cl, comp in variants:
        step = train_step_fn(cfg, prec, comp)
        t0 = time.perf_counter()
        step()
        first = time.perf_counter() - t0
        sec = best_seconds(step, 2 if args.quick else 3)
        training.append({"precision": prec, "channels_last": cl, "compiled": comp, "iterations_per_s": 1 / sec,
                         "approx_gflops": train_flops / sec / 1e9, "first_step_s": first})

    return {"machine": machine(), "plane": args.size, "flops_per_pixel": fpp, "peaks_gflops": peak_best,
            "inference": inference, "training": training, "quick": args.quick}


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# N2SR speed (benchmarks/speed.py)", "",
        f"CPU: {m['cpu']} ({m['cpu_capability']}), {m['threads']} threads; torch {m['torch']}; "
        f"{'quick run' if r['quick'] else 'full run'}. Cores may be shared with other jobs: "
        "all numbers are best-of-repeats.", "",
        f"Network (code variant, shared weights): {r['flops_per_pixel'] / 1e6:.3f} MFLOP per input pixel "
        "(FlopCounterMode, 2 FLOPs per multiply-add).", "",
        "| peak probe | GFLOP/s |", "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in r["peaks_gflops"].items()], "",
        f"## Inference, {r['plane']}x{r['plane']} plane", "",
        "| path | MP/s | GFLOP/s | peak (same precision) | achieved/peak | best same-round ratio | first call s |",
        "|---|---|---|---|---|---|---|",
        *[f"| {i['path']} | {i['megapixels_per_s']:.3f} | {i['gflops']:.0f} | {i['peak_gflops']:.0f} | "
          f"{i['ratio_best_over_best_peak']:.0%} | {i['ratio_same_round_max']:.0%} | {i['first_call_s']:.1f} |"
          for i in r["inference"]], "",
        "## Training (batch 16, 128x128 crops -> 64x64 inputs, Adam, complement MSE)", "",
        "| precision | channels_last | compiled | it/s | ~GFLOP/s | first step s |", "|---|---|---|---|---|---|",
        *[f"| {t['precision']} | {t['channels_last']} | {t['compiled']} | {t['iterations_per_s']:.3f} | "
          f"{t['approx_gflops']:.0f} | {t['first_step_s']:.1f} |" for t in r["training"]], "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no torch.compile (about a minute)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: CPUs available)")
    parser.add_argument("--size", type=int, default=512, help="inference plane size")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="speed", help="output file stem")
    args = parser.parse_args()
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (args.out / f"{args.name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
