"""The default tile overlap: the smallest whose tiled output stays within tolerance of whole-plane output.

Trains the authors' network briefly on real FMD noise (Confocal_BPAE_B, FOV 1 captures), then
denoises real FMD planes whole and as tiles of `--tile` pixels with each overlap. Per overlap:
the largest absolute difference from the whole-plane output (intensity units, 0-255 data),
the mean one, and the change of PSNR against the avg50 reference (fixed range 255). The
smallest overlap whose |PSNR change| stays <= 0.01 dB on every plane is the recommendation
(`DenoiseConfig.overlap`). Writes benchmarks/results/overlap.md and overlap.json.

    .venv/bin/python benchmarks/overlap.py [--data ../shared/data] [--iterations 300]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from n2sr.config import DenoiseConfig, TrainConfig
from n2sr.io import checkpoints
from n2sr.io.images import read_image
from n2sr.metrics import psnr
from n2sr.nn.inference import Engine
from n2sr.nn.model import from_state, receptive_field
from n2sr.nn.normalize import Normalizer
from n2sr.steps.train import train_planes

REPO = Path(__file__).resolve().parents[1]
PLANES = [  # (configuration, fov, capture file): held-out BPAE_B FOVs and the other configurations
    ("Confocal_BPAE_B", "17", "HV110_P0500510000.png"),
    ("Confocal_BPAE_B", "18", "HV110_P0500510000.png"),
    ("Confocal_FISH", "1", "capture00.png"),
    ("Confocal_MICE", "1", "capture00.png"),
]
OVERLAPS = [0, 32, 64, 96, 128, 160, "exact"]
TOLERANCE_DB = 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("N2SR_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    fmd = args.data / "fmd"
    train_dir = fmd / "Confocal_BPAE_B" / "raw" / "1"
    planes = [read_image(f) for f in sorted(train_dir.glob("*.png"))[:8]]
    cfg = TrainConfig(iterations=args.iterations, batch_size=4, patch_size=64, lr=1e-3, val_every=100,
                      checkpoint_every=args.iterations, whiten=False)  # as recorded: before n2sr.nn.whiten
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        train_planes(planes, Path(tmp) / "m.pt", cfg, progress=False)
        ckpt = checkpoints.load(Path(tmp) / "m.pt")
    train_s = time.monotonic() - t0
    net = from_state(ckpt["model_config"], ckpt["scale"], ckpt["model"])
    rf = receptive_field(cfg.model)
    norm = Normalizer.from_dict(ckpt["normalizer"])

    def denoise(plane: np.ndarray, **settings) -> np.ndarray:
        engine = Engine(net, DenoiseConfig(device="cpu", **settings), scale=2, receptive_field=rf, normalizer=norm)
        return engine.denoise_plane(plane)[0]

    rows = []
    for config, fov, name in PLANES:
        noisy = read_image(fmd / config / "raw" / fov / name)
        ref = read_image(fmd / config / "gt" / fov / "avg50.png")
        t = time.monotonic()
        whole = denoise(noisy, tile_size=1024, overlap="exact")
        whole_s = time.monotonic() - t
        base = psnr(ref, whole, 255.0)
        for overlap in OVERLAPS:
            t = time.monotonic()
            tiled = denoise(noisy, tile_size=args.tile, overlap=overlap)
            rows.append({"plane": f"{config}/{fov}", "overlap": overlap, "max_abs": float(np.abs(tiled - whole).max()),
                         "mean_abs": float(np.abs(tiled - whole).mean()),
                         "psnr_change_db": psnr(ref, tiled, 255.0) - base, "psnr_whole_db": base,
                         "seconds": time.monotonic() - t, "whole_seconds": whole_s})
            print(rows[-1], flush=True)
    ok = [o for o in OVERLAPS if all(abs(r["psnr_change_db"]) <= TOLERANCE_DB for r in rows if r["overlap"] == o)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overlap.json").write_text(json.dumps({"rows": rows, "recommended": ok[0] if ok else None,
                                                      "receptive_field": rf, "tile": args.tile,
                                                      "train_seconds": train_s, "iterations": args.iterations},
                                                     indent=1))
    lines = [f"# Tile overlap against whole-plane output (`benchmarks/overlap.py`)", "",
             f"Authors' network, {args.iterations} iterations on Confocal_BPAE_B FOV 1 (8 captures; batch 4, 64x64, "
             f"lr 1e-3, {train_s:.0f} s); planes of 512x512 denoised whole and as {args.tile}-pixel tiles; receptive "
             f"field {rf} px (exact = {rf} rounded up to 32). Differences in 0-255 intensity units; PSNR change of the "
             "tiled output against avg50 (fixed range 255) relative to the whole-plane output.", "",
             "| overlap | max abs diff (worst plane) | mean abs diff (mean) | PSNR change dB (worst) | time tiled/whole |",
             "|---|---|---|---|---|"]
    for overlap in OVERLAPS:
        part = [r for r in rows if r["overlap"] == overlap]
        worst = max(part, key=lambda r: abs(r["psnr_change_db"]))
        lines.append(f"| {overlap} | {max(r['max_abs'] for r in part):.3f} | "
                     f"{np.mean([r['mean_abs'] for r in part]):.4f} | {worst['psnr_change_db']:+.4f} | "
                     f"{np.mean([r['seconds'] / r['whole_seconds'] for r in part]):.2f} |")
    lines += ["", f"Smallest overlap within {TOLERANCE_DB} dB on every plane: **{ok[0] if ok else 'none'}**.", ""]
    (args.out / "overlap.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
