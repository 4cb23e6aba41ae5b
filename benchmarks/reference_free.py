"""Reference-free quality estimates against the true PSNR (issue 15).

On every image with a reference in ../shared/data (FMD, W2S) and on the paper's synthetic noise
(Table 1) applied to FMD references, for the noisy input, Noise2SR, Noise2Void, Noise2Self and
BM3D: the true PSNR (range 255) against the two estimators of `n2sr.estimate` (Monte-Carlo SURE
of the output, and the paper's Theorem-1 held-out loss), computed exactly as the pipeline does
(`n2sr.nn.probe.plane_estimates`, `n2sr.steps.bm3d`, `n2sr.estimate.columns`).

The networks are small budgets (`--iterations`, single-threaded), so their quality varies, which
is what a ranking test needs. Test planes are centre crops (`--crop`) to bound BM3D's cost.
FMD's configurations are confocal, so point-scanned: their estimates are computed as the pipeline
does for config/fmd.yaml's `point_scanning` list (``scanned``, noise correlated along x only); W2S
(widefield camera) and the synthetic noise are not. W2S's avg1/avg400 pairs were rescaled to 0-255 each on its own (shared/data/README.md): the
reference is mapped onto the noisy frame's scale by a least-squares affine fit first.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reference_free.py --iterations 100
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reference_free.py --step-sweep   # SURE against its probe step
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from scipy.stats import spearmanr

from n2sr import estimate
from n2sr.config import DenoiseConfig, ModelConfig, TrainConfig
from n2sr.io import checkpoints
from n2sr.io.images import read_image
from n2sr.io.provenance import versions
from n2sr.metrics import psnr
from n2sr.nn.inference import Engine
from n2sr.nn.model import from_state, receptive_field
from n2sr.nn.normalize import Normalizer
from n2sr.nn.probe import plane_estimates
from n2sr.noise import correlated_poisson_gaussian, paper_noise_model, poisson_gaussian
from n2sr.steps.bm3d import _sure as bm3d_sure
from n2sr.bm3d import bm3d_denoise
from n2sr.steps.train import train_planes

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("N2SR_DATA", REPO.parent / "shared" / "data"))
NETWORKS = ("n2sr", "n2v", "n2s")
SYNTHETIC = {"gaussian_s15": dict(sigma=15.0), "poisson_l20": dict(lam=20.0),
             "poisson_gaussian_l15_s5": dict(lam=15.0, sigma=5.0), "correlated_l30_s2_c06": dict(lam=30.0, sigma=2.0)}
R = 255.0
NEIGHBOURS = 5  # BPAE_B FOVs 17-18: captures 0-4 give a second truth (`neighbour_mse`)


def crop(plane: np.ndarray, side: int) -> np.ndarray:
    y0, x0 = (plane.shape[0] - side) // 2, (plane.shape[1] - side) // 2
    return plane[y0:y0 + side, x0:x0 + side]


def datasets(seed: int) -> list[dict]:
    """Configurations: training planes, and (name, noisy, reference) test triples."""
    fmd = DATA / "fmd"
    out = []
    b = fmd / "Confocal_BPAE_B"
    cap = lambda fov: sorted((b / "raw" / str(fov)).glob("*.png"))  # noqa: E731
    out.append({"group": "fmd", "configuration": "Confocal_BPAE_B", "scanned": True,
                "train": [read_image(cap(f)[0]) for f in range(1, 17)],
                "test": [(f"fov{f}_c{c}", read_image(cap(f)[c]), read_image(b / "gt" / str(f) / "avg50.png"))
                         for f in (17, 18) for c in (0, 1)],
                "neighbours": {f"fov{f}_c{c}": [read_image(p) for k, p in enumerate(cap(f)[:NEIGHBOURS]) if k != c]
                               for f in (17, 18) for c in (0, 1)}})
    for name in ("Confocal_BPAE_G", "Confocal_BPAE_R", "Confocal_FISH", "Confocal_MICE"):
        noisy = read_image(next((fmd / name / "raw" / "1").glob("*.png")))
        out.append({"group": "fmd", "configuration": name, "train": [noisy], "scanned": True,
                    "test": [("fov1", noisy, read_image(fmd / name / "gt" / "1" / "avg50.png"))]})
    w2s = DATA / "w2s_8bit"
    for ch in (0, 1, 2):
        pairs = [(p.name.split("_")[2], read_image(p), read_image(w2s / "avg400" / p.name.replace("input_avg1", "target_avg400")))
                 for p in sorted((w2s / "avg1").glob(f"input_avg1_*_{ch}.tif"))]
        out.append({"group": "w2s", "configuration": f"w2s_ch{ch}", "train": [p[1] for p in pairs],
                    "test": [(f"fov{f}", n, affine_to(r, n)) for f, n, r in pairs]})
    refs = {f: read_image(b / "gt" / str(f) / "avg50.png").astype(np.float64) for f in (*range(1, 9), 17, 18)}
    for k, (name, levels) in enumerate(SYNTHETIC.items()):
        rng = np.random.default_rng(seed + k)
        model = paper_noise_model(levels.get("lam"), levels.get("sigma", 0.0))
        draw = ((lambda x: correlated_poisson_gaussian(x, model, 0.6, rng)) if "correlated" in name
                else (lambda x: poisson_gaussian(x, model, rng)))
        out.append({"group": "synthetic", "configuration": name,
                    "train": [draw(refs[f]).astype(np.float32) for f in range(1, 9)],
                    "test": [(f"fov{f}", draw(refs[f]).astype(np.float32), refs[f]) for f in (17, 18)]})
    return out


def affine_to(reference: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """`reference` on the noisy frame's intensity scale: least-squares ``a ref + b`` to the noisy
    frame (whose mean is the clean signal), for W2S's separately rescaled pairs."""
    x, y = reference.astype(np.float64).ravel(), noisy.astype(np.float64).ravel()
    a, b = np.polyfit(x, y, 1)
    return a * reference.astype(np.float64) + b


def train_model(method: str, planes: list[np.ndarray], path: Path, args) -> tuple[Engine, dict]:
    cfg = TrainConfig(recipe="fast", iterations=args.iterations, seed=args.seed, device="cpu",
                      val_every=args.iterations, checkpoint_every=args.iterations,
                      model=ModelConfig(features=args.features), whiten=False)  # as recorded: before n2sr.nn.whiten
    train_planes(planes, path, cfg, method=method, progress=False)
    ckpt = checkpoints.load(path)
    net = from_state(ckpt["model_config"], ckpt["scale"], ckpt["model"])
    engine = Engine(net, DenoiseConfig(device="cpu", precision="fp32"), scale=ckpt["scale"],
                    receptive_field=receptive_field(ModelConfig(**ckpt["model_config"]), sr=ckpt["scale"] == 2),
                    normalizer=Normalizer.from_dict(ckpt["normalizer"]))
    return engine, ckpt


def neighbour_mse(out: np.ndarray, others: list[np.ndarray]) -> float:
    """MSE of `out` against the clean image of the captures taken next to it: the mean of the
    `others` (independent noise), less that mean's own noise (the noise variance, from pairs of
    consecutive others, over their number). avg50 lies 7-56 % of the noise variance away from a
    capture's clean image (`reference_mismatch.md`); the captures next to it, about 1-2 %."""
    stack = np.stack([o.astype(np.float64) for o in others])
    v = float(np.mean([np.mean((stack[k] - stack[k + 1]) ** 2) / 2 for k in range(len(stack) - 1)]))
    return float(np.mean((out - stack.mean(axis=0)) ** 2)) - v / len(stack)


def row(base: dict, noisy: np.ndarray, ref: np.ndarray, out: np.ndarray, entry: dict | None, identity: bool,
        others: list[np.ndarray] | None = None) -> dict:
    cols = estimate.columns(noisy, out, entry, R, identity=identity, scanned=base["scanned"])
    extra = {"psnr_neighbours": estimate.mse_to_psnr(neighbour_mse(out, others), R)} if others else {}
    return {**base, "psnr": psnr(ref, out, R), **extra, **cols}


def run(args) -> pd.DataFrame:
    rows = []
    models = Path(tempfile.mkdtemp(prefix="n2sr-reference-free-"))  # checkpoints are not results
    for d in datasets(args.seed):
        engines = {}
        for method in NETWORKS:
            t0 = time.process_time()
            engines[method] = train_model(method, d["train"], models / f"{d['configuration']}_{method}.pt", args)
            print(f"{d['configuration']} {method}: trained in {time.process_time() - t0:.0f} CPU-s", flush=True)
        for i, (name, noisy, ref) in enumerate(d["test"]):
            y, x = crop(noisy, args.crop).astype(np.float64), crop(ref, args.crop).astype(np.float64)
            others = [crop(o, args.crop) for o in d.get("neighbours", {}).get(name, [])]
            scanned = d.get("scanned", False)
            base = {"group": d["group"], "configuration": d["configuration"], "image": name, "scanned": scanned}
            rows.append(row({**base, "method": "noisy"}, y, x, y, None, True, others))
            for method, (engine, ckpt) in engines.items():
                out = engine.denoise_array(y.astype(np.float32), progress=False)[0].astype(np.float64)
                entry = plane_estimates(engine, y, out, method=method, settings=ckpt.get("method_config"),
                                        sr=ckpt["scale"] == 2, draws=args.draws, seed=i, scanned=scanned)
                rows.append(row({**base, "method": method}, y, x, out, entry, False, others))
            out = bm3d_denoise(y).astype(np.float64)
            rows.append(row({**base, "method": "bm3d"}, y, x, out, bm3d_sure(y, out, seed=i, scanned=scanned), False, others))
            print(f"  {name}: " + ", ".join(f"{r['method']} {r['psnr']:.2f}/{r['est_psnr_sure']:.2f}/"
                                          f"{r['est_psnr_held_out']:.2f}" for r in rows[-5:]), flush=True)
    return pd.DataFrame(rows)


def stats(frame: pd.DataFrame, column: str) -> dict:
    """Error distribution of one estimator over the rows where it exists (an estimate of +inf,
    from an MSE estimate <= 0, counts as an infinite error)."""
    f = frame[frame[column].notna() & np.isfinite(frame["psnr"])]
    if f.empty:
        return {"n": 0}
    err = f[column] - f["psnr"]
    lo, hi = f[f"{column}_lo"], f[f"{column}_hi"]
    rho = spearmanr(f["psnr"], f[column]).statistic if len(f) > 2 else math.nan
    pixel = (f"{column}_lo_pixel", f"{column}_hi_pixel")
    covered = (lambda a, b: float(((f["psnr"] >= f[a]) & (f["psnr"] <= f[b])).mean())) if pixel[0] in f else None
    return {"n": len(f), "median_abs_err": float(err.abs().median()), "median_err": float(err.median()),
            "within_1db": float((err.abs() <= 1.0).mean()), "spearman": float(rho),
            "coverage": float(((f["psnr"] >= lo) & (f["psnr"] <= hi)).mean()),
            "coverage_pixel": covered(*pixel) if covered else math.nan}


def add_fit_error(frame: pd.DataFrame) -> pd.DataFrame:
    """For rows written before the intervals included the noise fit's error (no ``noise_energy``
    column): the fitted energy is the noisy row's SURE of the same image, and the intervals are
    recomputed with `n2sr.estimate.with_fit_error`; the pixel-only ones are kept as ``*_pixel``."""
    if "noise_energy" in frame.columns:
        return frame
    frame = frame.copy()
    noisy = frame[frame["method"] == "noisy"].set_index(["configuration", "image"])["est_mse_sure"]
    frame["noise_energy"] = [noisy.get((c, i), math.nan) for c, i in zip(frame["configuration"], frame["image"])]
    for name in ("sure", "held_out"):
        frame[f"est_psnr_{name}_lo_pixel"] = frame[f"est_psnr_{name}_lo"]
        frame[f"est_psnr_{name}_hi_pixel"] = frame[f"est_psnr_{name}_hi"]
        bounds = [estimate.with_fit_error(estimate.Estimate(m, s), e).psnr(R)[1:] if not math.isnan(m) else
                  (math.nan, math.nan) for m, s, e in zip(frame[f"est_mse_{name}"], frame[f"est_mse_{name}_se"],
                                                          frame["noise_energy"])]
        frame[f"est_psnr_{name}_lo"], frame[f"est_psnr_{name}_hi"] = zip(*bounds)
    return frame


def oracle_energy(frame: pd.DataFrame) -> pd.DataFrame:
    """Synthetic images only: each estimate with the fitted noise energy replaced by the true one
    (``mean(a x + b)`` of the clean crop), to the first order in the divergence (``mse + E_fit -
    E_true``; exact for the held-out loss), which separates the noise fit's error from the estimator's."""
    b = DATA / "fmd" / "Confocal_BPAE_B"
    rows = []
    for name, levels in SYNTHETIC.items():
        model = paper_noise_model(levels.get("lam"), levels.get("sigma", 0.0))
        for fov in (17, 18):
            x = crop(read_image(b / "gt" / str(fov) / "avg50.png").astype(np.float64), 256)
            true_energy = float(np.mean(model.a * x + model.b))
            part = frame[(frame["configuration"] == name) & (frame["image"] == f"fov{fov}")]
            for _, r in part.iterrows():
                for est in ("sure", "held_out"):
                    mse = r[f"est_mse_{est}"]
                    if math.isnan(mse):
                        continue
                    oracle = true_energy if r["method"] == "noisy" else mse + r["noise_energy"] - true_energy
                    rows.append({"configuration": name, "method": r["method"], "estimator": est,
                                 "energy_error": r["noise_energy"] / true_energy - 1,
                                 "err_fit": estimate.mse_to_psnr(mse, R) - r["psnr"],
                                 "err_oracle": estimate.mse_to_psnr(oracle, R) - r["psnr"]})
    return pd.DataFrame(rows)


def report(frame: pd.DataFrame, args, seconds: float) -> str:
    lines = ["# Reference-free quality estimates against the true PSNR (issue 15)", "",
             f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reference_free.py --iterations {args.iterations} "
             f"--features {args.features} --draws {args.draws} --crop {args.crop}` ({seconds / 60:.0f} CPU-minutes, "
             "single-threaded). Per-image rows: `reference_free.csv`; scatter: `reference_free.png`.", "",
             "Estimators (`n2sr/estimate.py`): **SURE** = Monte-Carlo PG-URE of the final output (one extra pass "
             "on a perturbed input, the noise covariance including the neighbour correlation estimated from the "
             "plane), for every method and the noisy input (its noise energy); **held-out** = the "
             "paper's Theorem 1, the held-out loss minus the fitted noise energy, mean of the draws (Noise2SR: "
             "complement pixels of the sub-sampled path; N2V/N2S: the masked pixels). Both use the blind "
             "Poisson-Gaussian fit of the noisy plane. Error = estimated - true PSNR (dB, range 255); coverage = "
             "share of images whose true PSNR lies in the stated 95 % interval.", ""]
    targets = "Targets: median |err| <= 0.5 dB, |err| <= 1 dB for >= 80 % of images, Spearman >= 0.9."
    for title, groups in (("All images and methods", [("all", frame)]),
                          ("By data set", list(frame.groupby("group", sort=False))),
                          ("By method", list(frame.groupby("method", sort=False))),
                          ("By configuration", list(frame.groupby("configuration", sort=False)))):
        lines += [f"## {title}", "", "| subset | estimator | n | median abs err | median err | within 1 dB | "
                  "Spearman | coverage | coverage, pixel SE only |", "|---|---|---|---|---|---|---|---|---|"]
        for name, part in groups:
            for est in ("est_psnr_sure", "est_psnr_held_out"):
                s = stats(part, est)
                if s["n"] == 0:
                    continue
                pixel = "n/a" if math.isnan(s["coverage_pixel"]) else f"{100 * s['coverage_pixel']:.0f} %"
                lines.append(f"| {name} | {est.removeprefix('est_psnr_')} | {s['n']} | {s['median_abs_err']:.2f} | "
                             f"{s['median_err']:+.2f} | {100 * s['within_1db']:.0f} % | {s['spearman']:.3f} | "
                             f"{100 * s['coverage']:.0f} % | {pixel} |")
        lines.append("")
    lines += [targets, ""]
    if "psnr_neighbours" in frame:
        lines += neighbour_section(frame)
    oracle = oracle_energy(frame)
    lines += ["## Synthetic images: fitted against true noise energy", "",
              "Each estimate subtracts the fitted noise energy `mean(a y + b)`; here it is replaced by the true "
              "one (first order in the divergence), per noise model: the fit's relative energy error and the "
              "median |error| (dB) with the fitted and with the true energy.", "",
              "| configuration | estimator | energy error | median abs err (fit) | median abs err (true energy) | "
              "within 1 dB (fit) | within 1 dB (true energy) |", "|---|---|---|---|---|---|---|"]
    for (config, est), part in oracle.groupby(["configuration", "estimator"], sort=False):
        lines.append(f"| {config} | {est} | {100 * part['energy_error'].mean():+.1f} % | "
                     f"{part['err_fit'].abs().median():.2f} | {part['err_oracle'].abs().median():.2f} | "
                     f"{100 * (part['err_fit'].abs() <= 1).mean():.0f} % | "
                     f"{100 * (part['err_oracle'].abs() <= 1).mean():.0f} % |")
    white = oracle[~oracle["configuration"].str.startswith("correlated")]
    lines += ["", "| white-noise synthetic, by method | estimator | median err (fit) | median err (true energy) |",
              "|---|---|---|---|"]
    for (est, method), part in white.groupby(["estimator", "method"], sort=False):
        lines.append(f"| {method} | {est} | {part['err_fit'].median():+.2f} | {part['err_oracle'].median():+.2f} |")
    lines.append("")
    flags = frame[frame["method"] != "noisy"].groupby("group")["residual_flag"].agg(
        lambda f: f"{(f != '').mean() * 100:.0f} % flagged")
    lines += ["Residual check (share of denoised images flagged): "
              + ", ".join(f"{g}: {v}" for g, v in flags.items()), ""]
    if args.compare:
        lines += compare(frame, pd.read_csv(args.compare), args.compare)
    return "\n".join(lines)


def neighbour_section(frame: pd.DataFrame) -> list[str]:
    """FMD BPAE_B's rows against avg50 and against the captures taken next to them (`neighbour_mse`)."""
    f = frame[frame["psnr_neighbours"].notna()]
    lines = ["## FMD BPAE_B against the captures next to it", "",
             "avg50 is 7-56 % of the noise variance away from a capture's clean image (the sample changes over the "
             "50 captures, `reference_mismatch.md`); the mean of the other captures 0-4, less its own noise "
             "(`neighbour_mse`), is about 1-2 % away. Error = estimated - true PSNR (dB), median |error| and median "
             "error, against each truth.", "",
             "| method | estimator | n | avg50: median abs err | median err | neighbours: median abs err | median err |",
             "|---|---|---|---|---|---|---|"]
    for method, part in f.groupby("method", sort=False):
        for est in ("est_psnr_sure", "est_psnr_held_out"):
            p = part[part[est].notna()]
            if p.empty:
                continue
            a, n = p[est] - p["psnr"], p[est] - p["psnr_neighbours"]
            lines.append(f"| {method} | {est.removeprefix('est_psnr_')} | {len(p)} | {a.abs().median():.2f} | "
                         f"{a.median():+.2f} | {n.abs().median():.2f} | {n.median():+.2f} |")
    sure = f[f["est_psnr_sure"].notna()]
    a, n = sure["est_psnr_sure"] - sure["psnr"], sure["est_psnr_sure"] - sure["psnr_neighbours"]
    lines += ["", f"SURE over all {len(sure)} rows: median |error| {a.abs().median():.2f} dB against avg50, "
              f"{n.abs().median():.2f} dB against the neighbours; within 1 dB {100 * (a.abs() <= 1).mean():.0f} % "
              f"and {100 * (n.abs() <= 1).mean():.0f} %.", "",
              "All rows, with BPAE_B's against the neighbours (every other row against its reference as before):", "",
              "| estimator | n | median abs err | median err | within 1 dB | Spearman |", "|---|---|---|---|---|---|"]
    truer = frame.assign(psnr=frame["psnr_neighbours"].fillna(frame["psnr"]))
    for est in ("est_psnr_sure", "est_psnr_held_out"):
        st = stats(truer, est)
        lines.append(f"| {est.removeprefix('est_psnr_')} | {st['n']} | {st['median_abs_err']:.2f} | "
                     f"{st['median_err']:+.2f} | {100 * st['within_1db']:.0f} % | {st['spearman']:.3f} |")
    return lines + [""]


def compare(frame: pd.DataFrame, earlier: pd.DataFrame, path: Path) -> list[str]:
    """This run's errors beside an earlier run's on the same rows (same images, methods and
    outputs: their true PSNRs must agree), by data set and by method."""
    keys = ["configuration", "image", "method"]
    both = frame.merge(earlier, on=keys, suffixes=("", "_earlier"))
    same = bool(np.allclose(both["psnr"], both["psnr_earlier"], atol=1e-6))
    lines = [f"## Against the earlier run `{path.name}`", "",
             f"{len(both)} rows in both; true PSNRs {'identical (same outputs)' if same else 'DIFFER (outputs changed)'}.",
             "Median |estimated - true| (dB), this run / earlier, and share within 1 dB.", "",
             "| subset | estimator | n | median abs err | earlier | within 1 dB | earlier |", "|---|---|---|---|---|---|---|"]
    for column in ("group", "method"):
        for name, part in both.groupby(column, sort=False):
            for est in ("est_psnr_sure", "est_psnr_held_out"):
                now, old = ((part[e] - part["psnr"]).dropna() for e in (est, f"{est}_earlier"))
                if now.empty:
                    continue
                lines.append(f"| {name} | {est.removeprefix('est_psnr_')} | {len(now)} | "
                             f"{now.abs().median():.2f} | {old.abs().median():.2f} | "
                             f"{100 * (now.abs() <= 1).mean():.0f} % | {100 * (old.abs() <= 1).mean():.0f} % |")
    return lines + [""]


def scatter(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    markers = dict(zip(["noisy", *NETWORKS, "bm3d"], "osD^v"))
    colors = {"fmd": "tab:blue", "w2s": "tab:red", "synthetic": "tab:green"}
    for ax, est in zip(axes, ("est_psnr_sure", "est_psnr_held_out")):
        f = frame[np.isfinite(frame[est])]  # +inf estimates (MSE estimate <= 0) are not drawn
        for (group, method), part in f.groupby(["group", "method"]):
            ax.scatter(part["psnr"], part[est], s=18, marker=markers[method], color=colors[group],
                       label=f"{group} {method}", alpha=0.8)
        lims = [min(f["psnr"].min(), f[est].min()) - 1, max(f["psnr"].max(), f[est].max()) + 1]
        ax.plot(lims, lims, "k-", lw=0.8)
        ax.fill_between(lims, [v - 1 for v in lims], [v + 1 for v in lims], color="0.85", zorder=0)
        ax.set(xlabel="true PSNR (dB)", ylabel="estimated PSNR (dB)", title=est.removeprefix("est_psnr_"))
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def step_sweep(args) -> str:
    """SURE of BM3D (and of a Gaussian blur, smooth in its input) against the finite-difference
    step: a denoiser that is smooth in its input gives the same estimate at every small step; one
    that is not (BM3D's block matching and hard thresholding) does not."""
    d = DATA / "w2s_8bit"
    b = DATA / "fmd" / "Confocal_BPAE_B"
    cases = [(f"W2S ch0 FOV {fov}", read_image(d / "avg1" / f"input_avg1_{fov}_0.tif"),
              read_image(d / "avg400" / f"target_avg400_{fov}_0.tif"), True) for fov in ("081", "085")]
    cases.append(("FMD BPAE_B FOV 18", read_image(sorted((b / "raw" / "18").glob("*.png"))[0]),
                  read_image(b / "gt" / "18" / "avg50.png"), False))
    steps = (0.05, 0.2, 0.5, 1.0)
    lines = ["# SURE against its finite-difference step (`reference_free.py --step-sweep`)", "",
             f"256 x 256 centre crops; estimated PSNR (dB, range 255) for probe seeds 0 and 1 at each step "
             f"(in units of the noise std; the pipeline uses {estimate.PROBE_STEP}).", "",
             "| image | denoiser | true | " + " | ".join(f"step {e}" for e in steps) + " |",
             "|---|---|---|" + "---|" * len(steps)]
    for name, noisy, ref, affine in cases:
        y, x = crop(noisy, 256).astype(np.float64), crop(ref, 256).astype(np.float64)
        x = affine_to(x, y) if affine else x
        model = estimate.fit(y)
        noise = (max(model.a, 0.0), model.b)
        for label, f in (("BM3D", lambda z: bm3d_denoise(z, noise=noise)),
                         ("Gaussian blur 1.5", lambda z: ndimage.gaussian_filter(z, 1.5))):
            out = f(y)
            cells = []
            for step in steps:
                with mock.patch.object(estimate, "PROBE_STEP", step):
                    cells.append("/".join(f"{estimate.mse_to_psnr(estimate.black_box_sure(f, y, out, model, s)[0].mse, R):.2f}"
                                          for s in range(2)))
            lines.append(f"| {name} | {label} | {psnr(x, out, R):.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "reference_free"))
    p.add_argument("--from-csv", type=Path, help="only rewrite the report and plot from this CSV of an earlier run")
    p.add_argument("--cpu-minutes", type=float, default=math.nan, help="with --from-csv: that run's CPU time")
    p.add_argument("--compare", type=Path, help="an earlier run's CSV: add its errors on the same rows to the report")
    p.add_argument("--step-sweep", action="store_true",
                   help="only write <out>_step.md: SURE of BM3D and of a blur against the probe step")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    if args.step_sweep:
        path = out.with_name(out.name + "_step.md")
        path.write_text(step_sweep(args))
        print(path.read_text())
        return
    if args.from_csv:
        frame, seconds = pd.read_csv(args.from_csv, keep_default_na=False, na_values=["", "nan", "NaN"]), \
            60 * args.cpu_minutes
        for text in ("held_out_kind", "residual_flag"):
            frame[text] = frame[text].fillna("").astype(str)
    else:
        t0 = time.process_time()
        frame = run(args)
        seconds = time.process_time() - t0
    frame = add_fit_error(frame)
    frame.to_csv(out.with_suffix(".csv"), index=False)
    scatter(frame, out.with_suffix(".png"))
    out.with_suffix(".md").write_text(report(frame, args, seconds))
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "versions": versions()}, indent=1, default=str))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
