"""Archive-scale throughput of denoising (and training) on the device at hand; not a timed test.

Every case runs in a fresh interpreter so that its peak RSS is its own. Writes
benchmarks/results/throughput_<device>.md and .json with, measured in the same run:

(a) network only: Mpx/s of the engine's forward passes at its own tile and batch;
(b) host path alone: `n2sr denoise` (the real step, Zarr -> Zarr) with a null network that
    computes nothing, so reading, tiling, blending, downsampling and writing set the pace;
(c) end to end: `n2sr denoise` of a uint16 stack, TIFF -> Zarr and Zarr -> Zarr;
(d) tiled / whole: two planes as 2x2 tiles at the default overlap against whole-plane passes;
(e) training: iterations/s of the real training step (batch 16, 128x128);
(f) memory: peak RSS of the host path for a stack and one 16x larger.

    .venv/bin/python benchmarks/throughput.py --device cpu [--planes 16 --size 1024]
    python benchmarks/throughput.py --device cuda --planes 16 --size 2048   # on a GPU node
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _stack(path: Path, planes: int, size: int) -> Path:
    """A uint16 stack of smooth structure plus Poisson noise, as TIFF and as OME-Zarr."""
    import tifffile

    from n2sr.steps.ingest import ingest

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    clean = 800 + 600 * np.sin(yy / 37.0) * np.cos(xx / 53.0)
    data = np.stack([rng.poisson(clean).astype(np.uint16) for _ in range(planes)])
    tifffile.imwrite(path / "stack.tif", data, photometric="minisblack")
    ingest(path / "stack.tif", path / "stack.zarr")
    return path


def _model(path: Path) -> Path:
    """An untrained checkpoint of the authors' network (speed does not depend on the weights)."""
    from dataclasses import asdict

    import torch

    from n2sr.config import ModelConfig, TrainConfig
    from n2sr.io import checkpoints
    from n2sr.nn.model import build_model

    torch.manual_seed(0)
    net = build_model(ModelConfig())
    checkpoints.save(path / "model.pt", {
        "method": "n2sr", "scale": 2, "model_config": asdict(ModelConfig()), "train_config": asdict(TrainConfig()),
        "normalizer": {"offset": 0.0, "scale": 2000.0, "mode": "range"}, "model": net.state_dict()})
    return path / "model.pt"


def case_network(device: str, size: str) -> dict:
    """(a): forward passes at the engine's tile and batch on a plane of `size`."""
    import torch

    from n2sr.config import DenoiseConfig, ModelConfig
    from n2sr.nn.inference import Engine
    from n2sr.nn.model import build_model, receptive_field
    from n2sr.nn.normalize import Normalizer

    net = build_model(ModelConfig()).eval()
    engine = Engine(net, DenoiseConfig(device=device), scale=2, receptive_field=receptive_field(ModelConfig()),
                    normalizer=Normalizer(0.0, 1.0, "range"))
    side = min(int(size), engine.tile)
    batch = max(1, engine.batch_pixels // (side * side))
    x = torch.rand(batch, 1, side, side, device=engine.device)
    engine.forward(x)  # warm-up (and compilation, if any)
    _sync(engine.device)
    t, n = time.perf_counter(), 0
    while time.perf_counter() - t < 10.0 or n < 2:
        engine.forward(x)
        n += 1
    _sync(engine.device)
    seconds = time.perf_counter() - t
    return {"mpx_per_s": n * batch * side * side / seconds / 1e6, "tile": side, "batch": batch,
            "precision": engine.precision}


def case_denoise(device: str, work: str, source: str, null: str, tile: str = "", captures: str = "") -> dict:
    """(b), (c), (d), (f): the real `n2sr denoise` step, optionally with a network that computes nothing."""
    import torch

    from n2sr.config import DenoiseConfig
    from n2sr.steps import denoise as step

    if null:
        class Null(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x.new_zeros(x.shape[0], 1, 2 * x.shape[-2], 2 * x.shape[-1])

        step.from_state = lambda *args: Null().eval()
    cfg = DenoiseConfig(device=device, **({"tile_size": int(tile)} if tile else {}))
    out = Path(work) / f"out-{time.monotonic_ns()}.zarr"
    t = time.perf_counter()
    picked = [int(c) for c in captures.split(",")] if captures else None
    step.denoise(Path(work) / "model.pt", Path(work) / source, out, cfg, captures=picked)
    seconds = time.perf_counter() - t
    import zarr

    shape = zarr.open_group(str(out), mode="r")["0"].shape
    return {"seconds": seconds, "mpx_per_s": float(np.prod(shape)) / seconds / 1e6}


def case_train(device: str) -> dict:
    """(e): iterations/s of the real training step, batch 16 of 128x128."""
    import torch

    from n2sr.config import TrainConfig
    from n2sr.nn.device import pick_device, resolve_precision
    from n2sr.nn.objectives import objective
    from n2sr.nn.sampling import PlaneBank
    from n2sr.nn.training import _Run, _sample_batch, _step

    cfg = TrainConfig(device=device)
    dev = pick_device(device)
    precision = resolve_precision(cfg.precision, dev)
    obj = objective("n2sr")
    run = _Run(cfg, obj, dev)
    data = PlaneBank.from_planes([torch.rand(1, 512, 512) for _ in range(4)], dev)
    for _ in range(2):  # warm-up
        _step(run, obj, _sample_batch(data, cfg, run.data_gen), dev, precision)
    _sync(dev)
    t, n = time.perf_counter(), 0
    while time.perf_counter() - t < 15.0 or n < 3:
        _step(run, obj, _sample_batch(data, cfg, run.data_gen), dev, precision)
        n += 1
    _sync(dev)
    return {"it_per_s": n / (time.perf_counter() - t), "precision": precision}


def _sync(device) -> None:
    import torch

    if getattr(device, "type", device) == "cuda":
        torch.cuda.synchronize()


def child(name: str, *args: str) -> dict:
    """Run ``case_<name>(*args)`` in a fresh interpreter; its result plus its peak RSS in MB."""
    code = (f"import json, resource, sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import throughput as t; "
            f"r = t.case_{name}(*{list(args)!r}); "
            "r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; "
            "print('RESULT ' + json.dumps(r))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(f"case {name} {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--planes", type=int, default=16)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"throughput_{args.device.split(':')[0]}"
    results: dict = {"device": args.device, "planes": args.planes, "size": args.size}
    partial = stem.with_suffix(".partial.json")
    if partial.is_file() and json.loads(partial.read_text()).get("size") == args.size:
        results = json.loads(partial.read_text())  # a killed run continues with the cases it lacks

    def run(key: str, *case: str) -> None:
        if key not in results:
            results[key] = child(*case)
            partial.write_text(json.dumps(results, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _model(work)
        big = work / "big"
        big.mkdir()
        _stack(work, args.planes, args.size)
        _stack(big, 16 * args.planes, args.size)
        (big / "model.pt").symlink_to(work / "model.pt")
        run("f_host_memory", "denoise", args.device, str(work), "stack.zarr", "1")
        run("f_host_memory_16x", "denoise", args.device, str(big), "stack.zarr", "1")
        run("b_host_null", "denoise", args.device, str(work), "stack.zarr", "1")
        run("a_network", "network", args.device, str(args.size))
        run("c_zarr_to_zarr", "denoise", args.device, str(work), "stack.zarr", "")
        run("c_tiff_to_zarr", "denoise", args.device, str(work), "stack.tif", "")
        run("d_whole_plane", "denoise", args.device, str(work), "stack.zarr", "", str(args.size), "0,1")
        run("d_default_tile_half", "denoise", args.device, str(work), "stack.zarr", "",
                                              str(max(32, args.size // 2)), "0,1")
        run("e_train", "train", args.device)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    partial.unlink()
    stem.with_suffix(".md").write_text(report(results))
    print(report(results))


def report(r: dict) -> str:
    net, host = r["a_network"], r["b_host_null"]
    rss = lambda c: f"{c['peak_rss_mb']:.0f}"  # noqa: E731
    lines = [f"# Throughput on {r['device']} (`benchmarks/throughput.py --device {r['device']} --planes {r['planes']} "
             f"--size {r['size']}`)", "",
             f"Stack: {r['planes']} x {r['size']}^2 uint16; authors' network (untrained weights), precision "
             f"{net['precision']}; every case a fresh process.", "",
             "| case | Mpx/s | ratio | peak RSS MB |", "|---|---|---|---|",
             f"| (a) network only, tile {net['tile']}, batch {net['batch']} | {net['mpx_per_s']:.3f} | 1.00 | "
             f"{rss(net)} |",
             f"| (b) host path, null network, Zarr -> Zarr | {host['mpx_per_s']:.1f} | "
             f"{host['mpx_per_s'] / net['mpx_per_s']:.0f}x network | {rss(host)} |"]
    for key, name in (("c_zarr_to_zarr", "(c) end to end, Zarr -> Zarr"), ("c_tiff_to_zarr", "(c) end to end, TIFF -> Zarr")):
        c = r[key]
        lines.append(f"| {name} | {c['mpx_per_s']:.3f} | {c['mpx_per_s'] / net['mpx_per_s']:.2f} of network | {rss(c)} |")
    whole, half = r["d_whole_plane"], r["d_default_tile_half"]
    lines.append(f"| (d) tiles of half the plane side (2x2, default overlap) vs whole plane | {half['mpx_per_s']:.3f} | "
                 f"tiled/whole time {whole['mpx_per_s'] / half['mpx_per_s']:.2f} | {rss(half)} |")
    small, large = r["f_host_memory"], r["f_host_memory_16x"]
    lines.append(f"| (f) host path, 16x more planes | {large['mpx_per_s']:.1f} | peak RSS "
                 f"{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x of the small stack | {rss(large)} |")
    lines.append(f"| (e) training, batch 16 of 128^2 ({r['e_train']['precision']}) | {r['e_train']['it_per_s']:.2f} it/s |"
                 f" | {rss(r['e_train'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
