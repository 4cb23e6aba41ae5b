"""Spatially correlated noise: how much there is, and what the wider sub-sampler gains (issue 13, item 3).

Part ``measure``: the noise autocorrelation of noisy - reference on W2S (widefield) and on FMD's
confocal captures, and on the synthetic correlated noise of `n2sr.noise.correlated_poisson_gaussian`
on FMD references; next to each, the single-image estimate (`n2sr.correlation.estimate_autocorrelation`)
and the stride ``auto`` would pick.

Part ``train``: one FMD reference with Poisson-Gaussian noise at lag-1 correlation 0, 0.3 and 0.6;
Noise2SR at equal iterations, single-threaded, in the variants of ``--strides``: ``2`` / ``3`` / ``4``
(that stride, not whitened), ``whiten`` (stride 2 on the whitened plane, `n2sr.nn.whiten`) and
``auto`` (``stride: auto``, ``whiten: auto``: what the defaults pick); and the project's BM3D (blind
noise estimate). PSNR on 0-255 against the reference.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/noise_correlation.py measure
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/noise_correlation.py train --rho 0.6 --iterations 600
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from n2sr.bm3d import bm3d_denoise
from n2sr.config import DenoiseConfig, TrainConfig
from n2sr.correlation import Autocorrelation, choose_stride, estimate_autocorrelation, measured_kernel, noise_autocorrelation
from n2sr.metrics import psnr
from n2sr.nn.decorrelate import runner
from n2sr.nn.inference import Engine
from n2sr.nn.model import from_state, receptive_field
from n2sr.nn.training import fit
from n2sr.noise import correlated_poisson_gaussian, paper_noise_model

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DATA = DATA if DATA.exists() else Path("/work/shared/data")
FMD_REFS = ["Confocal_BPAE_B", "Confocal_BPAE_G", "Confocal_FISH", "Confocal_MICE"]
OUT = Path(__file__).resolve().parent / "results"


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), np.float64)


def _row(name: str, noisy: np.ndarray, ref: np.ndarray) -> dict:
    """The truth, the image-domain estimate, and what `train.stride: auto` measures (`measured_kernel`:
    the spectrum's noise band, the image domain for widefield-like noise) and picks from it."""
    t, e = noise_autocorrelation(noisy, ref), estimate_autocorrelation(noisy)
    m = Autocorrelation.from_kernel(measured_kernel(noisy))
    return {"data": name, **{f"true_{k}": round(v, 3) for k, v in t.as_dict().items()},
            **{f"est_{k}": round(v, 3) for k, v in e.as_dict().items()},
            **{f"measured_{k}": round(v, 3) for k, v in m.as_dict().items()}, "auto_stride": choose_stride(m)}


def _affine(noisy: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """`ref` mapped onto `noisy`'s scale by least squares: the 8-bit W2S pairs were each rescaled to
    0-255 on their own (shared/data README), so noisy - ref would carry signal and read as a
    correlation of ~0.3 at every lag."""
    design = np.stack([ref.ravel(), np.ones(ref.size)], axis=1)
    coef = np.linalg.lstsq(design, noisy.ravel(), rcond=None)[0]
    return coef[0] * ref + coef[1]


def measure() -> list[dict]:
    rows = []
    for src in sorted((DATA / "w2s_8bit" / "avg1").glob("*.tif")):
        ref = DATA / "w2s_8bit" / "avg400" / src.name.replace("input_avg1", "target_avg400")
        y = tifffile.imread(src).astype(float)
        rows.append(_row(f"W2S {src.stem[len('input_avg1_'):]}", y, _affine(y, tifffile.imread(ref).astype(float))))
    for cfg in FMD_REFS + ["Confocal_BPAE_R"]:
        raw = sorted((DATA / "fmd" / cfg / "raw" / "1").glob("*.png"))[0]
        rows.append(_row(f"FMD {cfg} capture", _png(raw), _png(DATA / "fmd" / cfg / "gt" / "1" / "avg50.png")))
    # avg50 is not the clean image of a capture (the sample changes over the 50: reference_mismatch.md),
    # which adds smooth signal to noisy - avg50; two consecutive captures differ by their noise alone.
    pair = sorted((DATA / "fmd" / "Confocal_BPAE_B" / "raw" / "1").glob("*.png"))[:2]
    rows.append(_row("FMD Confocal_BPAE_B capture 0 - capture 1", _png(pair[0]), _png(pair[1])))
    rng = np.random.default_rng(0)
    for cfg in FMD_REFS:
        ref = _png(DATA / "fmd" / cfg / "gt" / "1" / "avg50.png")
        for rho in (0.0, 0.3, 0.6):
            noisy = correlated_poisson_gaussian(ref, paper_noise_model(30, 2), rho, rng)
            rows.append(_row(f"synthetic {cfg} lam30 s2 rho{rho}", noisy, ref))
    return rows


def train(rho: float, iterations: int, strides: list[str], reference: str, seed: int, real: bool) -> list[dict]:
    """``real``: FMD's own first capture of `reference` instead of synthetic noise (rho is then unused)."""
    torch.set_num_threads(1)
    ref = _png(DATA / "fmd" / reference / "gt" / "1" / "avg50.png")
    if real:
        noisy = _png(sorted((DATA / "fmd" / reference / "raw" / "1").glob("*.png"))[0])
        rho = f"FMD {reference} capture"
    else:
        noisy = correlated_poisson_gaussian(ref, paper_noise_model(30, 2), rho, np.random.default_rng(seed))
    rows = [{"rho": rho, "method": "noisy", "psnr": psnr(ref, noisy, 255)}]
    t0 = time.process_time()
    rows.append({"rho": rho, "method": "bm3d", "psnr": psnr(ref, bm3d_denoise(noisy), 255),
                 "cpu_s": time.process_time() - t0})
    for stride in strides:
        choice = {"auto": dict(stride="auto", whiten="auto"), "whiten": dict(stride=2, whiten=True)}.get(
            stride, dict(stride=int(stride) if stride.isdigit() else stride, whiten=False))
        cfg = TrainConfig(iterations=iterations, batch_size=4, patch_size=64, lr=1e-3, val_fraction=0.0,
                          val_every=iterations, checkpoint_every=iterations, device="cpu", **choice)
        t0 = time.process_time()
        result = fit([noisy.astype(np.float32)], cfg, progress=False)
        cpu = time.process_time() - t0
        net = from_state(asdict(cfg.model), 2, result.best_state)
        engine = Engine(net, DenoiseConfig(device="cpu"), scale=2, receptive_field=receptive_field(cfg.model),
                        normalizer=result.normalizer)
        used, white = result.stride["stride"], result.stride["whiten"] is not None
        denoised = runner(engine, used, result.stride["whiten"]).denoise_array(
            noisy[None].astype(np.float32), progress=False)[0][0]
        picked = f" (-> {used}{', whitened' if white else ''})" if stride == "auto" else ""
        rows.append({"rho": rho, "method": f"n2sr {'stride ' if stride.isdigit() else ''}{stride}{picked}",
                     "psnr": psnr(ref, denoised, 255), "cpu_s": cpu, "estimate": result.stride["estimate"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("part", choices=["measure", "train"])
    p.add_argument("--rho", type=float, default=0.6)
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--strides", default="2,3,whiten,auto")
    p.add_argument("--reference", default="Confocal_BPAE_B")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real", action="store_true", help="FMD's real capture of --reference, not synthetic noise")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    rows = measure() if a.part == "measure" else train(a.rho, a.iterations, a.strides.split(","), a.reference, a.seed,
                                                           a.real)
    tag = "" if a.part == "measure" else f"_{a.reference}_real" if a.real else f"_rho{a.rho}"
    out = Path(a.out) if a.out else OUT / f"noise_correlation_{a.part}{tag}.json"
    out.write_text(json.dumps(rows, indent=1))
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
