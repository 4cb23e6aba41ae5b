"""Noise2SR quality on the real FMD images we have, under a stated CPU budget.

Per configuration: train on noisy captures of the training FOVs, denoise captures of the
validation FOVs, and score noisy and denoised against avg50 in both metric conventions
(fixed range 255, and the authors' per-image ``ref.max() - ref.min()``).
FMD's test FOVs (19, 20) are held back from this project, so Confocal_BPAE_B validates on
FOVs 17-18 after training on 1-16; the other configurations have only FOV 1 with one
capture, which is trained on and denoised (legitimate for a single-image method).

    .venv/bin/python benchmarks/quality_fmd.py --minutes 5
    .venv/bin/python benchmarks/quality_fmd.py --minutes 5 --compare-shared-weights
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from n2sr.config import DenoiseConfig, ModelConfig, TrainConfig
from n2sr.io import checkpoints
from n2sr.io.images import read_image
from n2sr.io.provenance import versions
from n2sr.metrics import evaluate_pair
from n2sr.nn.inference import Engine
from n2sr.nn.model import from_state, receptive_field
from n2sr.nn.normalize import Normalizer
from n2sr.steps.train import train_planes

REPO = Path(__file__).resolve().parents[1]


def fmd_root() -> Path:
    return Path(os.environ.get("N2SR_DATA", REPO.parent / "shared" / "data")) / "fmd"


def captures(root: Path, config: str, fov: int) -> list[Path]:
    return sorted((root / config / "raw" / str(fov)).glob("*.png"))


def protocol(root: Path, config: str, train_captures: int, val_captures: int) -> tuple[list[Path], list[tuple[int, Path]]]:
    """Training files and (fov, file) validation pairs for one configuration."""
    fovs = sorted(int(p.name) for p in (root / config / "raw").iterdir() if p.is_dir())
    if len(fovs) >= 3:
        train_fovs, val_fovs = fovs[:-2], fovs[-2:]
        train_files = [f for fov in train_fovs for f in captures(root, config, fov)[:train_captures]]
        val = [(fov, f) for fov in val_fovs for f in captures(root, config, fov)[:val_captures]]
        return train_files, val
    fov = fovs[0]
    files = captures(root, config, fov)[:1]
    return files, [(fov, f) for f in files]


def run(config: str, model_cfg: ModelConfig, args: argparse.Namespace, out_dir: Path) -> list[dict]:
    root = fmd_root()
    train_files, val = protocol(root, config, args.train_captures, args.val_captures)
    planes = [read_image(f) for f in train_files]
    cfg = TrainConfig(recipe=args.recipe, iterations=args.iterations, minutes=args.minutes, seed=args.seed,
                      model=model_cfg, batch_size=args.batch_size, patch_size=args.patch_size, lr=args.lr, val_every=args.val_every,
                      checkpoint_every=args.val_every, whiten=False)  # as recorded: before n2sr.nn.whiten
    tag = f"{config}-{'shared' if model_cfg.shared_weights else 'separate'}-{model_cfg.variant}"
    ckpt_path = args.models_dir / f"{tag}.pt"
    t0 = time.monotonic()
    result = train_planes(planes, ckpt_path, cfg, sources=[str(f) for f in train_files], progress=not args.quiet)
    seconds = time.monotonic() - t0
    ckpt = checkpoints.load(ckpt_path)
    net = from_state(ckpt["model_config"], ckpt["scale"], ckpt["model"])
    rf = receptive_field(model_cfg)
    engine = Engine(net, DenoiseConfig(), scale=ckpt["scale"], receptive_field=rf,
                    normalizer=Normalizer.from_dict(ckpt["normalizer"]))
    rows = []
    for fov, f in val:
        noisy = read_image(f)
        ref = read_image(root / config / "gt" / str(fov) / "avg50.png")
        denoised, _ = engine.denoise_plane(noisy)
        for method, img in (("noisy", noisy), ("n2sr", denoised)):
            m = evaluate_pair(ref, img, fixed_data_range=255)
            rows.append({"configuration": config, "variant": model_cfg.variant, "shared_weights": model_cfg.shared_weights,
                         "fov": fov, "image": f.name, "method": method, "train_images": len(planes),
                         "iterations": result.steps, "best_step": result.best_step, "best_val": result.best_val,
                         "train_seconds": round(seconds, 1),
                         **{k: m[k] for k in ("psnr", "ssim", "psnr_per_image", "ssim_per_image")}})
    return rows


def markdown(frame: pd.DataFrame, args: argparse.Namespace) -> str:
    g = frame.groupby(["configuration", "shared_weights", "method"], sort=False)
    summary = g[["psnr", "ssim", "psnr_per_image", "ssim_per_image", "iterations", "train_seconds"]].mean()
    summary["n"] = g.size()
    lines = [
        "# Noise2SR on FMD (validation FOVs available here)",
        "",
        f"Budget per model: {args.minutes} min CPU and at most {args.iterations} iterations; "
        f"recipe {args.recipe}, batch {args.batch_size}, patch {args.patch_size}, lr {args.lr}, seed {args.seed}, torch threads {torch.get_num_threads()}.",
        "Confocal_BPAE_B: trained on FOVs 1-16, scored on FOVs 17-18; other configurations: FOV 1 only "
        "(trained on and denoised). PSNR/SSIM: `fixed` uses data range 255, `per-image` the authors' max-min.",
        "",
        "| configuration | shared weights | method | PSNR fixed | SSIM fixed | PSNR per-image | SSIM per-image | n | iterations | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (config, shared, method), r in summary.iterrows():
        lines.append(f"| {config} | {shared} | {method} | {r.psnr:.2f} | {r.ssim:.4f} | {r.psnr_per_image:.2f} | "
                     f"{r.ssim_per_image:.4f} | {int(r.n)} | {int(r.iterations)} | {r.train_seconds:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="*", help="FMD configurations (default: all present)")
    p.add_argument("--minutes", type=float, default=5.0, help="CPU training budget per model")
    p.add_argument("--iterations", type=int, default=100000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--recipe", choices=["authors", "fast"], default="authors",
                   help="authors: the constant lr its recorded results used (TrainConfig.recipe)")
    p.add_argument("--val-every", type=int, default=25)
    p.add_argument("--train-captures", type=int, default=1, help="captures per training FOV (paper: one)")
    p.add_argument("--val-captures", type=int, default=3, help="captures per validation FOV (paper: three)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-shared-weights", action="store_true", help="train shared and separate weights")
    p.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--name", default="quality_fmd")
    p.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "n2sr-quality-models",
                   help="where the trained checkpoints go (not into the repository)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    root = fmd_root()
    if not root.is_dir():
        print(f"FMD data not found at {root}; set N2SR_DATA", file=sys.stderr)
        return 2
    configs = args.configs or sorted(d.name for d in root.iterdir() if d.is_dir())
    variants = [ModelConfig(shared_weights=True), ModelConfig(shared_weights=False)] if args.compare_shared_weights \
        else [ModelConfig()]
    rows = []
    for config in configs:
        for model_cfg in variants:
            rows += run(config, model_cfg, args, args.out_dir)
            frame = pd.DataFrame(rows)
            frame.to_csv(args.out_dir / f"{args.name}.csv", index=False)
            (args.out_dir / f"{args.name}.md").write_text(markdown(frame, args))
    meta = {"args": {k: str(v) for k, v in vars(args).items()}, "versions": versions(),
            "model_configs": [dataclasses.asdict(v) for v in variants]}
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(meta, indent=2))
    print(markdown(pd.DataFrame(rows), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
