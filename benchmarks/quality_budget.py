"""Quality per CPU-minute (issue 13): Noise2SR PSNR after 1, 2, 5 and 10 minutes of training, per
configuration of ``../shared/data``, against the project's BM3D and the paper's numbers.

Per configuration, per budget: train with ``minutes`` set (the recipe's schedule ends at the
budget), denoise the scored captures, score both metric conventions. Protocols:

- FMD Confocal_BPAE_B: train on one capture of FOVs 1-16, score 3 captures of FOVs 17-18 (held out).
- The other FMD configurations: FOV 1, one capture, trained on and scored (in-sample: how a
  single-image method is used).
- W2S channel c: train on the 5 noisy frames (FOVs 081-085) of the channel, score each in-sample
  against its 400-frame average. The shared W2S files were each rescaled to 0-255 on their own
  (``../shared/data/README.md``), so every image (noisy, BM3D, Noise2SR alike) is first mapped
  onto its reference by the least-squares affine fit ``a * img + b``.

BM3D (`n2sr.bm3d`, blind Poisson-Gaussian fit + GAT) needs no training and is scored once.
Beside them: the paper's Table 2 N2SR (FOVs 19-20, which this project does not have) and this
project's 600-iteration N2SR from ``results/paper_tables.csv``.

    .venv/bin/python benchmarks/quality_budget.py                       # 1, 2, 5, 10 minutes, all
    .venv/bin/python benchmarks/quality_budget.py --minutes 1 2 --configs Confocal_FISH W2S_ch1
    .venv/bin/python benchmarks/quality_budget.py --train recipe=authors --name quality_budget_authors
    .venv/bin/python benchmarks/quality_budget.py --merge a.csv b.csv      # budgets run apart, one table
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_fmd import fmd_root, protocol  # noqa: E402

from n2sr.bm3d import bm3d_denoise  # noqa: E402
from n2sr.config import DenoiseConfig, ModelConfig, TrainConfig  # noqa: E402
from n2sr.io import checkpoints  # noqa: E402
from n2sr.io.images import read_image  # noqa: E402
from n2sr.io.provenance import versions  # noqa: E402
from n2sr.metrics import evaluate_pair  # noqa: E402
from n2sr.nn.decorrelate import runner  # noqa: E402
from n2sr.nn.inference import Engine  # noqa: E402
from n2sr.nn.model import from_state, receptive_field  # noqa: E402
from n2sr.nn.normalize import Normalizer  # noqa: E402
from n2sr.steps.train import train_planes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The paper's Table 2, N2SR, per-image range (FOVs 19-20, 3 captures each).
PAPER_N2SR = {"Confocal_BPAE_B": 39.69, "Confocal_BPAE_G": 34.45, "Confocal_BPAE_R": 33.47,
              "Confocal_FISH": 34.14, "Confocal_MICE": 37.49}


@dataclasses.dataclass
class Case:
    """One configuration: training planes and (name, noisy, reference) scored triples."""

    name: str
    train: list[np.ndarray]
    scored: list[tuple[str, np.ndarray, np.ndarray]]
    affine: bool  # map every image onto its reference first (W2S's per-image rescaling)


def fmd_case(config: str, val_captures: int) -> Case:
    root = fmd_root()
    train_files, val = protocol(root, config, 1, val_captures)
    scored = [(f"{fov}/{f.name}", read_image(f), read_image(root / config / "gt" / str(fov) / "avg50.png"))
              for fov, f in val]
    return Case(config, [read_image(f) for f in train_files], scored, affine=False)


def w2s_case(channel: int) -> Case:
    root = fmd_root().parent / "w2s_8bit"
    noisy = sorted((root / "avg1").glob(f"input_avg1_*_{channel}.tif"))
    pairs = [(f.name, read_image(f), read_image(root / "avg400" / f.name.replace("input_avg1", "target_avg400")))
             for f in noisy]
    return Case(f"W2S_ch{channel}", [p[1] for p in pairs], pairs, affine=True)


def cases(names: list[str] | None, val_captures: int) -> list[Case]:
    fmd = sorted(d.name for d in fmd_root().iterdir() if d.is_dir())
    every = fmd + [f"W2S_ch{c}" for c in range(3)]
    out = []
    for name in names or every:
        if name not in every:
            raise SystemExit(f"unknown configuration {name!r}; choose from {', '.join(every)}")
        out.append(w2s_case(int(name[-1])) if name.startswith("W2S_ch") else fmd_case(name, val_captures))
    return out


def on_reference(img: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """`img` mapped onto `ref` by the least-squares affine fit (for W2S's per-image scaling)."""
    design = np.stack([img.ravel().astype(np.float64), np.ones(img.size)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, ref.ravel().astype(np.float64), rcond=None)
    return (a * img + b).astype(np.float32)


def score(case: Case, name: str, img: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    m = evaluate_pair(ref, on_reference(img, ref) if case.affine else img, fixed_data_range=255)
    return {k: m[k] for k in ("psnr", "ssim", "psnr_per_image", "ssim_per_image")}


def train_and_score(case: Case, minutes: float, overrides: dict, args: argparse.Namespace) -> list[dict]:
    cfg = TrainConfig(minutes=minutes, iterations=10**9, seed=args.seed, **overrides)
    path = args.models_dir / f"{case.name}-{minutes:g}min.pt"
    t0 = time.monotonic()
    result = train_planes(case.train, path, cfg, progress=not args.quiet)
    seconds = time.monotonic() - t0
    return [{**row, "minutes": minutes, "iterations": result.steps, "train_seconds": round(seconds, 1)}
            for row in score_checkpoint(case, path)]


def score_checkpoint(case: Case, path: Path) -> list[dict]:
    """The scored images of `case` denoised by the Noise2SR checkpoint at `path`."""
    ckpt = checkpoints.load(path)
    net = from_state(ckpt["model_config"], ckpt["scale"], ckpt["model"])
    engine = Engine(net, DenoiseConfig(), scale=ckpt["scale"],
                    receptive_field=receptive_field(ModelConfig(**ckpt["model_config"])),
                    normalizer=Normalizer.from_dict(ckpt["normalizer"]))
    run = runner(engine, ckpt.get("stride", 2), ckpt.get("whiten"))  # as n2sr denoise runs it
    return [{"configuration": case.name, "image": name, "method": "n2sr",
             **score(case, name, run.denoise_array(np.asarray(noisy, np.float32)[None], progress=False)[0][0], ref)}
            for name, noisy, ref in case.scored]


def baselines(case: Case) -> list[dict]:
    rows = []
    for name, noisy, ref in case.scored:
        rows.append({"configuration": case.name, "image": name, "method": "noisy", **score(case, name, noisy, ref)})
        rows.append({"configuration": case.name, "image": name, "method": "bm3d",
                     **score(case, name, bm3d_denoise(noisy), ref)})
    return rows


def six_hundred_iterations() -> pd.Series:
    """Mean per-image-range PSNR of the 600-iteration N2SR of ``paper_tables.csv`` (real noise)."""
    path = REPO / "benchmarks" / "results" / "paper_tables.csv"
    if not path.is_file():
        return pd.Series(dtype=float)
    frame = pd.read_csv(path)
    frame = frame[(frame.method == "n2sr") & frame.configuration.str.startswith("Confocal_")]
    return frame.groupby("configuration").psnr_per_image.mean()


def markdown(frame: pd.DataFrame, args: argparse.Namespace, overrides: dict) -> str:
    lines = ["# Quality per CPU-minute", "",
             f"`benchmarks/quality_budget.py {' '.join(args.argv)}` on {time.strftime('%Y-%m-%d')}, torch threads "
             f"{torch.get_num_threads()}; training overrides: {overrides or 'none (config defaults)'}. "
             "Mean PSNR (dB) over the scored images; BPAE_B on held-out FOVs 17-18, the rest in-sample "
             "(see the script's docstring; W2S after an affine fit to the reference).", ""]
    old = six_hundred_iterations()
    for metric, title in (("psnr_per_image", "per-image range (the paper's convention)"), ("psnr", "fixed range 255")):
        table = frame.assign(column=np.where(frame.method == "n2sr", frame.minutes.map(lambda m: f"n2sr {m:g} min"),
                                             frame.method)).pivot_table(index="configuration", columns="column",
                                                                        values=metric, aggfunc="mean", sort=False)
        order = ["noisy", "bm3d"] + sorted((c for c in table.columns if c.startswith("n2sr")),
                                           key=lambda c: float(c.split()[1]))
        table = table[[c for c in order if c in table.columns]]
        if metric == "psnr_per_image":
            table["n2sr 600 it"] = old.reindex(table.index)
            table["paper n2sr"] = pd.Series(PAPER_N2SR).reindex(table.index)
        lines += [f"**{title}**", "", table.round(2).to_markdown(), ""]
    its = frame[frame.method == "n2sr"].groupby(["configuration", "minutes"]).iterations.first().unstack()
    lines += ["**iterations reached**", "", its.to_markdown(), ""]
    return "\n".join(lines)


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    means = frame.groupby(["configuration", "method", "minutes"], dropna=False).psnr_per_image.mean()
    for i, config in enumerate(frame.configuration.unique()):
        colour = f"C{i}"
        n2sr = means.loc[config, "n2sr"]
        ax.plot(n2sr.index, n2sr.values, "o-", color=colour, label=config)
        ax.axhline(means.loc[config, "bm3d"].iloc[0], color=colour, ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training budget (CPU minutes)")
    ax.set_ylabel("PSNR, per-image range (dB)")
    ax.set_title("Noise2SR per CPU-minute (dashed: BM3D)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="*", help="configurations (default: every one in ../shared/data)")
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5, 10])
    p.add_argument("--train", nargs="*", default=[], metavar="KEY=VALUE",
                   help="TrainConfig overrides, e.g. recipe=authors batch_size=16 (numbers parsed as JSON)")
    p.add_argument("--val-captures", type=int, default=3, help="scored captures per BPAE_B validation FOV")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--name", default="quality_budget")
    p.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "n2sr-quality-budget")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--merge", type=Path, nargs="+", metavar="CSV",
                   help="train nothing: write --name's tables and plot from these runs' CSVs (budgets run apart)")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.merge:  # a budget's rows come from the first CSV holding it; baselines from the first CSV
        frame = pd.concat([pd.read_csv(f) for f in args.merge], ignore_index=True)
        frame = frame.drop_duplicates(["configuration", "image", "method", "minutes"], keep="first")
        frame.to_csv(args.out_dir / f"{args.name}.csv", index=False)
        (args.out_dir / f"{args.name}.md").write_text(markdown(frame, args, {}))
        plot(frame, args.out_dir / f"{args.name}.png")
        print(markdown(frame, args, {}))
        return 0
    if not fmd_root().is_dir():
        print(f"data not found at {fmd_root().parent}; set N2SR_DATA", file=sys.stderr)
        return 2
    overrides = {}
    for item in args.train:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    rows: list[dict] = []
    for case in cases(args.configs, args.val_captures):
        rows += baselines(case)
        for minutes in args.minutes:
            rows += train_and_score(case, minutes, overrides, args)
            frame = pd.DataFrame(rows)
            frame.to_csv(args.out_dir / f"{args.name}.csv", index=False)
            (args.out_dir / f"{args.name}.md").write_text(markdown(frame, args, overrides))
    frame = pd.DataFrame(rows)
    plot(frame, args.out_dir / f"{args.name}.png")
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(
        {"argv": args.argv, "overrides": overrides, "versions": versions(), "threads": torch.get_num_threads()}, indent=2))
    print(markdown(frame, args, overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
