"""PSNR per CPU-second of training recipes: the authors' constant schedule against the fast one.

Single-threaded, so that budgets are CPU-seconds and do not depend on what else the machine
runs: the seconds per iteration of each batch x crop size are measured first (process CPU
time), and each run gets ``budget / seconds_per_iteration`` iterations, so every schedule ends
at the end of its budget (the fast recipe's progress is then its step fraction). Validation and
denoising are not counted. Images:

* ``synthetic``: a 256x256 `n2sr.synthetic.clean_image` with Poisson-Gaussian noise, 20 photons
  at full scale and 5 electrons read noise (`n2sr.synthetic.noise_model`), scored against the
  clean image (data range 1);
* ``fmd``: FMD Confocal_FISH FOV 1, its one noisy capture, scored against avg50 (range 255).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recipe.py --image synthetic --budgets 60 180

``--cli MINUTES`` instead runs the acceptance check: ``n2sr train --minutes MINUTES`` with the
default (auto) recipe on the synthetic image, ``--threads`` torch threads, then scores it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
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
from n2sr.metrics import psnr
from n2sr.nn.inference import Engine
from n2sr.nn.model import from_state, receptive_field
from n2sr.nn.normalize import Normalizer
from n2sr.nn.training import fit
from n2sr.noise import poisson_gaussian
from n2sr.synthetic import clean_image, noise_model

FMD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fmd"
# name: (recipe, batch, crop, lr, ema); None = the recipe's default
VARIANTS: dict[str, tuple[str, int, int, float, float]] = {
    "authors 16x128 1e-4": ("authors", 16, 128, 1e-4, 0.0),
    "constant 4x64 1e-3": ("authors", 4, 64, 1e-3, 0.0),
    "fast 8x64 1e-3": ("fast", 8, 64, 1e-3, 0.995),
    "fast 8x64 2e-3": ("fast", 8, 64, 2e-3, 0.995),
    "fast 8x64 4e-3": ("fast", 8, 64, 4e-3, 0.995),
    "fast 8x64 2e-3 no-ema": ("fast", 8, 64, 2e-3, 0.0),
    "fast 8x64 2e-3 ema.999": ("fast", 8, 64, 2e-3, 0.999),
    "fast 4x64 2e-3": ("fast", 4, 64, 2e-3, 0.995),
    "fast 16x64 2e-3": ("fast", 16, 64, 2e-3, 0.995),
    "fast 8x96 2e-3": ("fast", 8, 96, 2e-3, 0.995),
    "fast 16x128 2e-3": ("fast", 16, 128, 2e-3, 0.995),
}


def image(name: str, root: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(noisy, reference, data range) of one benchmark image."""
    if name == "synthetic":
        clean = clean_image((256, 256), np.random.default_rng(13))
        noisy = poisson_gaussian(clean, noise_model(20.0, 5.0), np.random.default_rng(14))
        return noisy.astype(np.float32), clean, 1.0
    return (read_image(root / "Confocal_FISH" / "raw" / "1" / "capture00.png"),
            read_image(root / "Confocal_FISH" / "gt" / "1" / "avg50.png"), 255.0)


def seconds_per_iteration(noisy: np.ndarray, batch: int, crop: int) -> float:
    """CPU seconds of one training step at this batch and crop (after two warm-up steps)."""
    cfg = TrainConfig(recipe="authors", batch_size=batch, patch_size=crop, val_fraction=0, val_every=10**6,
                      checkpoint_every=10**6, whiten=False)  # as recorded: before n2sr.nn.whiten
    fit([noisy], dataclasses.replace(cfg, iterations=2), progress=False)
    t = time.process_time()
    fit([noisy], dataclasses.replace(cfg, iterations=10), progress=False)
    return (time.process_time() - t) / 10


def score(noisy: np.ndarray, ref: np.ndarray, data_range: float, result, cfg: TrainConfig) -> float:
    net = from_state(dataclasses.asdict(cfg.model), result.scale, result.best_state)
    engine = Engine(net, DenoiseConfig(), scale=result.scale, receptive_field=receptive_field(cfg.model),
                    normalizer=result.normalizer)
    return psnr(ref, engine.denoise_plane(noisy)[0], data_range)


def cli_check(minutes: float, threads: int, out: Path) -> dict:
    """`n2sr train --minutes` on the synthetic image, as a user runs it; the gain in dB."""
    import tifffile

    noisy, ref, data_range = image("synthetic", FMD)
    with tempfile.TemporaryDirectory() as tmp:
        tifffile.imwrite(Path(tmp) / "noisy.tif", noisy)
        env = dict(os.environ, SLURM_CPUS_PER_TASK=str(threads))  # n2sr.nn.device.available_cpus
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "n2sr.cli", "train", str(Path(tmp) / "noisy.tif"), "--out",
                        str(Path(tmp) / "m.pt"), "--minutes", str(minutes)], check=True, env=env)
        wall = time.monotonic() - t
        ckpt = checkpoints.load(Path(tmp) / "m.pt")
    net = from_state(ckpt["model_config"], ckpt["scale"], ckpt["model"])
    engine = Engine(net, DenoiseConfig(), scale=ckpt["scale"], receptive_field=receptive_field(ModelConfig(**ckpt["model_config"])),
                    normalizer=Normalizer.from_dict(ckpt["normalizer"]))
    value = psnr(ref, engine.denoise_plane(noisy)[0], data_range)
    row = {"minutes": minutes, "threads": threads, "recipe": ckpt["recipe"], "steps": ckpt["steps"],
           "best_step": ckpt["step"], "wall_s": round(wall, 1), "noisy_psnr": round(psnr(ref, noisy, data_range), 2),
           "psnr": round(value, 2), "gain_db": round(value - psnr(ref, noisy, data_range), 2)}
    print(row, flush=True)
    pd.DataFrame([row]).to_csv(out, mode="a", header=not out.exists(), index=False)
    return row


def markdown(csv: Path) -> str:
    """The runs of `csv` as one table per image, best first within each budget."""
    frame = pd.read_csv(csv)
    parts = []
    for name, part in frame.groupby("image", sort=False):
        part = part.sort_values(["budget_s", "psnr"], ascending=[True, False])
        cols = ["budget_s", "variant", "s_per_it", "iterations", "best_step", "train_cpu_s", "psnr", "gain_db"]
        parts.append(f"### {name} (noisy {part['noisy_psnr'].iloc[0]:.2f} dB)\n\n" + part[cols].to_markdown(index=False))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", choices=["synthetic", "fmd"], default="synthetic")
    ap.add_argument("--cli", type=float, metavar="MINUTES", help="run the `n2sr train --minutes` check instead")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the --cli check")
    ap.add_argument("--markdown", action="store_true", help="print the tables of --out and exit")
    ap.add_argument("--budgets", type=float, nargs="+", default=[60.0, 180.0], help="CPU seconds")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), help="names of VARIANTS per budget "
                    "(default all); with several budgets, --long-variants limits the longer ones")
    ap.add_argument("--long-variants", nargs="*", default=None)
    ap.add_argument("--fmd-root", type=Path, default=FMD)
    ap.add_argument("--out", type=Path, required=True, help="CSV, appended to")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(args.out), end="")
        return 0
    if args.cli:
        cli_check(args.cli, args.threads, args.out)
        return 0
    torch.set_num_threads(1)
    noisy, ref, data_range = image(args.image, args.fmd_root)
    noisy_psnr = psnr(ref, noisy, data_range)
    timing: dict[tuple[int, int], float] = {}
    for i, budget in enumerate(args.budgets):
        names = args.variants if i == 0 or args.long_variants is None else args.long_variants
        for name in names:
            recipe, batch, crop, lr, ema = VARIANTS[name]
            if (batch, crop) not in timing:
                timing[batch, crop] = seconds_per_iteration(noisy, batch, crop)
            iterations = max(1, round(budget / timing[batch, crop]))
            cfg = TrainConfig(recipe=recipe, iterations=iterations, batch_size=batch, patch_size=crop, lr=lr,
                              ema=ema, val_every=max(1, iterations // 10), checkpoint_every=10**6,
                              whiten=False)  # as recorded: before n2sr.nn.whiten
            t = time.process_time()
            result = fit([noisy], cfg, progress=False)
            cpu = time.process_time() - t
            value = score(noisy, ref, data_range, result, cfg)
            row = {"image": args.image, "budget_s": budget, "variant": name, "recipe": recipe, "batch": batch,
                   "crop": crop, "lr": lr, "ema": ema, "s_per_it": round(timing[batch, crop], 4),
                   "iterations": iterations, "best_step": result.best_step, "train_cpu_s": round(cpu, 1),
                   "noisy_psnr": round(noisy_psnr, 2), "psnr": round(value, 2), "gain_db": round(value - noisy_psnr, 2)}
            print(row, flush=True)
            pd.DataFrame([row]).to_csv(args.out, mode="a", header=not args.out.exists(), index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
