"""The paper's Table 1 (synthetic noise) and Table 2 (real FMD noise), through the pipeline.

Runs the shipped configs with all five methods (Noise2SR, BM3D, Noise2Void, Noise2Self,
Noise2Noise) on the FMD images in ../shared/data/fmd, under a stated CPU budget per model,
then writes markdown tables in the paper's layout with the paper's numbers beside ours:

* ``config/synthetic.yaml`` -> Table 1: Gaussian, Poisson and mixed noise added to the avg50
  references (noise drawn once, stored; two copies per reference for Noise2Noise).
* ``config/fmd.yaml`` -> Table 2 (confocal rows): the raw captures against avg50. Only
  Confocal_BPAE_B has several captures per FOV here, so only it gets a Noise2Noise model; the
  other four configurations run the four other methods (a second pipeline run).

Each run is a normal Snakemake run in its own working directory under ``--workdir`` with a
config derived from the shipped one (budget, CPU resources, the data path), so rerunning
resumes where a killed run stopped and redoes nothing. The budget replaces the authors' GPU
schedule (2000 epochs) by ``--iterations`` steps of ``--batch-size`` crops of
``--patch-size`` pixels for every trained model; the wall time per model is recorded.

    .venv/bin/python benchmarks/paper_tables.py --iterations 600
    .venv/bin/python benchmarks/paper_tables.py --tables-only    # re-write the tables from finished runs
    .venv/bin/python benchmarks/paper_tables.py --unlock          # resume after a kill left Snakemake's lock
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
METHODS = ["bm3d", "n2v", "n2s", "n2sr", "n2n"]  # the paper's column order
NAMES = {"noisy": "Noisy", "bm3d": "BM3D", "n2v": "N2V", "n2s": "N2S", "n2sr": "N2SR", "n2n": "N2N"}
SINGLE_CAPTURE = ["Confocal_BPAE_G", "Confocal_BPAE_R", "Confocal_FISH", "Confocal_MICE"]

# The paper's numbers (PSNR dB / SSIM), per-image data range convention (the authors' utils.py).
PAPER_TABLE1 = {  # noise -> method -> (psnr, ssim); the Poisson row's other cells are lost in our copy of the paper
    "gaussian_s15": {"bm3d": (34.15, 0.8572), "n2v": (34.56, 0.8871), "n2s": (34.99, 0.8938),
                     "n2sr": (35.27, 0.8936), "n2n": (35.42, 0.9002)},
    "poisson_l20": {"n2sr": (33.50, 0.8827)},
    "poisson_gaussian_l15_s5": {"bm3d": (28.01, 0.8271), "n2v": (31.69, 0.8512), "n2s": (31.43, 0.8461),
                                "n2sr": (31.80, 0.8523), "n2n": (32.56, 0.8633)},
}
NOISE_LABELS = {"gaussian_s15": "Gaussian (σ = 15)", "poisson_l20": "Poisson (λ = 20)",
                "poisson_gaussian_l15_s5": "Poisson (λ = 15) + Gaussian (σ = 5)"}
PAPER_TABLE2 = {  # confocal rows; FMD configuration -> method -> (psnr, ssim)
    "Confocal_BPAE_B": {"bm3d": (34.63, 0.9683), "n2v": (39.04, 0.9784), "n2s": (39.42, 0.9800),
                        "n2sr": (39.69, 0.9822), "n2n": (39.67, 0.9828)},
    "Confocal_BPAE_G": {"bm3d": (32.97, 0.8956), "n2v": (33.43, 0.8917), "n2s": (34.02, 0.9082),
                        "n2sr": (34.45, 0.9114), "n2n": (34.44, 0.9150)},
    "Confocal_BPAE_R": {"bm3d": (31.16, 0.9301), "n2v": (32.27, 0.9303), "n2s": (33.06, 0.9405),
                        "n2sr": (33.47, 0.9443), "n2n": (33.61, 0.9484)},
    "Confocal_FISH": {"bm3d": (29.09, 0.8732), "n2v": (33.97, 0.9098), "n2s": (34.06, 0.9108),
                      "n2sr": (34.14, 0.9131), "n2n": (34.14, 0.9167)},
    "Confocal_MICE": {"bm3d": (33.07, 0.9457), "n2v": (37.11, 0.9603), "n2s": (37.40, 0.9612),
                      "n2sr": (37.49, 0.9651), "n2n": (37.74, 0.9652)},
}
# Per-method settings that configs before the n2v / n2s sections kept under `train`: key -> (section, key).
LEGACY_TRAIN_KEYS = {"n2v_box": ("n2v", "box"), "n2v_radius": ("n2v", "radius"), "n2s_grid": ("n2s", "grid")}
SAMPLE_LABELS = {"Confocal_BPAE_B": "BPAE (Nuclei)", "Confocal_BPAE_G": "BPAE (F-actin)",
                 "Confocal_BPAE_R": "BPAE (Mito)", "Confocal_FISH": "Zebrafish", "Confocal_MICE": "Mouse Brain"}


def data_root() -> Path:
    return Path(os.environ.get("N2SR_DATA", REPO.parent / "shared" / "data")).resolve()


def method_sections(config: dict) -> dict:
    """Move ``train.n2v_box``, ``train.n2v_radius`` and ``train.n2s_grid`` (older configs) to the
    top-level sections ``n2v: {box, radius}`` and ``n2s: {grid}`` the schema now requires; a value
    already in its section wins. Changes and returns `config`."""
    train = config.get("train") or {}
    for old, (section, key) in LEGACY_TRAIN_KEYS.items():
        if old in train:
            value = train.pop(old)
            if config.get(section) is None:
                config[section] = {}
            config[section].setdefault(key, value)
    return config


def derived_config(base: str, args: argparse.Namespace, *, methods: list[str],
                   configurations: list[str] | None = None) -> dict:
    """The shipped config with the CPU budget, CPU resources and an absolute data path."""
    config = method_sections(yaml.safe_load((REPO / base).read_text()))
    fmd = str(data_root() / "fmd")
    if config.get("archive"):
        config["archive"]["root"] = fmd
        if configurations is not None:
            config["archive"]["configurations"] = {k: v for k, v in config["archive"]["configurations"].items()
                                                   if k in configurations}
    if config.get("synthetic") and config["synthetic"].get("references"):
        config["synthetic"]["references"]["root"] = fmd
        if args.noise:
            config["synthetic"]["noise"] = {k: v for k, v in config["synthetic"]["noise"].items() if k in args.noise}
    config["methods"] = methods
    config["train"].update(iterations=args.iterations, minutes=None, batch_size=args.batch_size,
                           patch_size=args.patch_size, lr=args.lr, val_every=args.val_every,
                           checkpoint_every=args.val_every)
    for rule in ("train", "denoise"):
        config["resources"][rule].update(threads=args.cores, gpu=0)
    config["denoise"].update(write_tiff=False, write_sr=False)
    return config


def runs(args: argparse.Namespace) -> dict[str, dict]:
    """Run name -> derived config (one Snakemake working directory each)."""
    trained = [m for m in METHODS if m != "n2n"]
    return {
        "synthetic": derived_config("config/synthetic.yaml", args, methods=METHODS),
        "fmd_bpae_b": derived_config("config/fmd.yaml", args, methods=METHODS, configurations=["Confocal_BPAE_B"]),
        "fmd_single_capture": derived_config("config/fmd.yaml", args, methods=trained, configurations=SINGLE_CAPTURE),
    }


def run_pipeline(name: str, config: dict, args: argparse.Namespace) -> float:
    """One resumable Snakemake run in <workdir>/<name>; returns its wall time in seconds."""
    work = args.workdir / name
    work.mkdir(parents=True, exist_ok=True)
    (work / "benchmark_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    command = [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(work), "--configfile", str(work / "benchmark_config.yaml"),
               "--cores", str(args.cores), "--keep-going", "--rerun-incomplete"]
    if args.unlock:
        subprocess.run([*command[:7], "--unlock"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    print(f"[{name}] {' '.join(command)}", flush=True)
    start = time.monotonic()
    with open(work / "snakemake.log", "a", encoding="utf-8") as log:
        done = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    # Accumulated over resumed invocations, so a report written later still has them.
    with open(work / "wall_seconds.txt", "a", encoding="utf-8") as f:
        f.write(f"{seconds:.0f}\n")
    if done.returncode:
        hint = ""
        if "LockException" in (work / "snakemake.log").read_text(encoding="utf-8")[-2000:]:
            hint = " (a killed earlier run left its lock: if none is running, rerun with --unlock)"
        raise SystemExit(f"[{name}] snakemake failed (exit {done.returncode}); see {work / 'snakemake.log'}{hint}")
    return seconds


def wall_seconds(work: Path) -> float | None:
    path = work / "wall_seconds.txt"
    return sum(float(x) for x in path.read_text().split()) if path.is_file() else None


def scores(work: Path) -> pd.DataFrame | None:
    """Every per-image metric row of a run (None before it has any)."""
    files = sorted((work / "results" / "metrics").glob("*/*/*.csv"))
    if not files:
        return None
    return pd.concat([pd.read_csv(f, dtype={"fov": str, "configuration": str}) for f in files], ignore_index=True)


TRAINED_RE = re.compile(r"trained (\d+) iterations in (\d+) s")


def train_times(work: Path) -> pd.DataFrame:
    """Wall seconds and iterations of each model, from the train logs."""
    rows = []
    for log in sorted((work / "logs" / "train").rglob("*.log")):
        found = TRAINED_RE.search(log.read_text(errors="replace"))
        if not found:
            continue
        rel = log.relative_to(work / "logs" / "train").with_suffix("")
        configuration, method = (rel.parts[0], rel.parts[1]) if len(rel.parts) == 2 else (rel.parts[0], "n2sr")
        rows.append({"configuration": configuration, "method": method, "iterations": int(found[1]),
                     "seconds": int(found[2])})
    return pd.DataFrame(rows, columns=["configuration", "method", "iterations", "seconds"])


def run_budget(work: Path) -> str:
    """The training budget a run was made with (its recorded config, not this invocation's options)."""
    config = yaml.safe_load((work / "benchmark_config.yaml").read_text())
    train, cores = config["train"], config["resources"]["train"]["threads"]
    return (f"{train['iterations']} iterations of batch {train['batch_size']} x {train['patch_size']}² crops, "
            f"Adam lr {train['lr']:g}, per trained model, on {cores} CPU cores")


def cell(part: pd.DataFrame, psnr: str, ssim: str) -> str:
    return f"{part[psnr].mean():.2f}/{part[ssim].mean():.4f}" if len(part) else "—"


def paper_cell(numbers: dict, method: str) -> str:
    return f"{numbers[method][0]:.2f}/{numbers[method][1]:.4f}" if method in numbers else "n/a"


def table(frame: pd.DataFrame, rows: list[str], labels: dict[str, str], paper: dict[str, dict],
          convention: str, title: str) -> list[str]:
    """One markdown table: per row our PSNR/SSIM per method, then the paper's."""
    psnr, ssim = ("psnr_per_image", "ssim_per_image") if convention == "per_image" else ("psnr", "ssim")
    columns = ["noisy", *METHODS]
    lines = [f"**{title}**", "", "| | | n | " + " | ".join(NAMES[m] for m in columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for row in rows:
        part = frame[frame["configuration"] == row]
        n = part[part["method"] == "noisy"]["image"].nunique()
        ours = [cell(part[part["method"] == m], psnr, ssim) for m in columns]
        lines.append(f"| {labels[row]} | ours | {n} | " + " | ".join(ours) + " |")
        if convention == "per_image":
            lines.append(f"| | paper | {'36' if row in PAPER_TABLE1 else '6'} | — | "
                         + " | ".join(paper_cell(paper.get(row, {}), m) for m in METHODS) + " |")
    return lines + [""]


def timing_table(times: pd.DataFrame) -> list[str]:
    if times.empty:
        return []
    pivot = times.groupby("method")["seconds"].agg(["mean", "min", "max", "count"]).reindex(
        [m for m in METHODS if m in set(times["method"])])
    lines = ["| method | models | iterations | mean s/model | min | max |", "|---|---|---|---|---|---|"]
    for method, r in pivot.iterrows():
        its = ", ".join(map(str, sorted(set(times[times["method"] == method]["iterations"]))))
        lines.append(f"| {NAMES[method]} | {int(r['count'])} | {its} | {r['mean']:.0f} | {r['min']:.0f} | {r['max']:.0f} |")
    return lines + [""]


def write_report(args: argparse.Namespace) -> Path:
    frames, times, wall, budgets = [], [], {}, {}
    for name in runs(args):
        work = args.workdir / name
        found = scores(work)
        if found is None:
            print(f"[{name}] no results yet; its table rows stay empty", flush=True)
            continue
        frames.append(found.assign(run=name))
        budgets[name] = run_budget(work)
        times.append(train_times(work).assign(run=name))
        if wall_seconds(work) is not None:
            wall[name] = wall_seconds(work)
    if not frames:
        raise SystemExit(f"{args.workdir}: no finished runs; run without --tables-only first")
    frame = pd.concat(frames, ignore_index=True)
    times = pd.concat(times, ignore_index=True)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out.with_suffix(".csv"), index=False)
    times.to_csv(out.with_name(out.stem + "_train_times.csv"), index=False)

    synthetic = frame[frame["run"] == "synthetic"]
    synthetic = synthetic.assign(fov=synthetic["fov"].astype(str))
    held_out = synthetic[synthetic["fov"].str.startswith("Confocal_BPAE_B-")]
    fmd = frame[frame["run"] != "synthetic"]
    noise_rows = [n for n in NOISE_LABELS if n in set(synthetic["configuration"])]
    sample_rows = [c for c in SAMPLE_LABELS if c in set(fmd["configuration"])]
    budget = "; ".join(sorted(set(budgets.values())))
    lines = [
        "# The paper's Table 1 and Table 2 through the n2sr pipeline, on the FMD data we have",
        "",
        f"Produced by `benchmarks/paper_tables.py` on {time.strftime('%Y-%m-%d')} (`{' '.join(sys.argv[1:]) or 'defaults'}`).",
        f"Budget: {budget} (the authors trained on a GPU for 2000 epochs, about 100x more steps of 4x larger "
        "batches); BM3D needs no training. Every method trains the same network backbone on the same noisy "
        "images with the same budget; the wall time per model is below.",
        "",
        "Cells are PSNR (dB) / SSIM means over the test images; n = test images. Two metric conventions:",
        "- **per-image range** (`ref.max() - ref.min()`, the authors' `utils.py`): the convention of the paper's "
        "numbers, shown beside ours;",
        "- **fixed range** (255 for 8-bit), which does not depend on each reference's contrast.",
        "",
    ]
    if noise_rows:
        lines += [
            "## Table 1: synthetic noise (`config/synthetic.yaml`)",
            "",
            "Noise added once (seed 0, stored, never re-drawn) to the avg50 references, two independent copies "
            "each; λ = photons at intensity 255 (`y = Poisson(λx/255)·255/λ`). Models train on both copies of "
            "Confocal_BPAE_B FOVs 1-16 and of FOV 1 of BPAE_G, BPAE_R, FISH, MICE (N2N: the two copies as a pair) "
            "and are scored on copy 0 of BPAE_B FOVs 17-18 (held out) and of the four FOV-1 references "
            "(in-sample: the way a single-image method is used; their noisy copy was trained on). The paper used "
            "180 references of 9 configurations and tested on 36 held-out images; its Poisson row is lost in our "
            "copy of the paper except for N2SR.",
            "",
            *table(synthetic, noise_rows, NOISE_LABELS, PAPER_TABLE1, "per_image",
                   "All 6 test references, per-image range (paper's convention)"),
            *table(synthetic, noise_rows, NOISE_LABELS, PAPER_TABLE1, "fixed", "All 6 test references, fixed range 255"),
            *table(held_out, noise_rows, NOISE_LABELS, PAPER_TABLE1, "per_image",
                   "Held-out only (Confocal_BPAE_B FOVs 17-18), per-image range"),
        ]
    if sample_rows:
        lines += [
            "## Table 2: real noise, confocal rows (`config/fmd.yaml`)",
            "",
            "Capture 0 of each test FOV against avg50. Confocal_BPAE_B (Nuclei) trains on FOVs 1-16 (all captures "
            "present: 50 of FOV 1, 5 of FOVs 2-16; N2N on consecutive pairs) and tests on FOVs 17-18, held out. "
            "The other four configurations have FOV 1 with one capture here: trained on and denoised (in-sample), "
            "and no Noise2Noise (it needs two captures). The paper tested on 3 captures of FOVs 19-20, "
            "which are held back from this project. The two-photon rows need data we do not have.",
            "",
            *table(fmd, sample_rows, SAMPLE_LABELS, PAPER_TABLE2, "per_image", "Per-image range (paper's convention)"),
            *table(fmd, sample_rows, SAMPLE_LABELS, PAPER_TABLE2, "fixed", "Fixed range 255"),
        ]
    lines += [
        "## Training time per model",
        "",
        *timing_table(times),
    ]
    if wall:
        lines += ["Pipeline wall time per run (training, inference, BM3D, scoring), summed over the invocations "
                  "that ended (an invocation killed outright records nothing, so a run resumed after a kill "
                  "shows less than its total work): "
                  + ", ".join(f"{k} {v / 60:.1f} min" for k, v in wall.items()) + ".", ""]
    lines += [f"Per-image rows: `{out.with_suffix('.csv').name}`; train times: "
              f"`{out.stem}_train_times.csv`; settings: `{out.with_suffix('.json').name}`.", ""]
    out.write_text("\n".join(lines), encoding="utf-8")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    out.with_suffix(".json").write_text(json.dumps({**settings, "wall_seconds": wall}, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=600, help="optimiser steps per trained model")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3: short CPU budget)")
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "work" / "paper_tables")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "paper_tables.md")
    parser.add_argument("--only", choices=["synthetic", "fmd_bpae_b", "fmd_single_capture"], action="append",
                        help="run only these pipeline runs (repeatable); the tables use all finished runs")
    parser.add_argument("--noise", choices=list(NOISE_LABELS), action="append",
                        help="only these noise models of the synthetic run (repeatable; default: all three)")
    parser.add_argument("--unlock", action="store_true",
                        help="first remove the locks a killed run left (only when no other run is going)")
    parser.add_argument("--tables-only", action="store_true", help="only re-write the tables from finished runs")
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()
    if not args.tables_only:
        for name, config in runs(args).items():
            if args.only is None or name in args.only:
                run_pipeline(name, config, args)
    print(f"wrote {write_report(args)}")


if __name__ == "__main__":
    main()
