"""Warm start against scratch (issue 13): PSNR per CPU-minute of a fine-tuned generic model on
configurations the generic model never saw.

Folds of ``../shared/data``'s configurations: for each fold, a generic model is trained (the
fast recipe, ``--generic-minutes``) on the training planes of every configuration *outside* the
fold (FMD and W2S, as ``quality_budget.py`` defines them), then every configuration in the fold
is trained for each budget twice with the same seed: from scratch and from the generic model
(``train.init``). Both arms are scored as ``quality_budget.py`` scores (BPAE_B on held-out FOVs
17-18, the rest in-sample), run one after the other so they share the machine's load.

With ``--include-fold`` the generic model also learns from the fold's own training planes, as
the workflow's ``train.init: generic`` does (self-supervised: the images to denoise are fair
training data); ``--reuse`` keeps a generic model already at its path.

    .venv/bin/python benchmarks/warm_start.py --minutes 1 2 --generic-minutes 5
    .venv/bin/python benchmarks/warm_start.py --minutes 5 --generic-minutes 20 --folds Confocal_BPAE_B,Confocal_BPAE_G
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_budget import Case, cases, train_and_score  # noqa: E402
from quality_fmd import fmd_root  # noqa: E402

from n2sr.config import TrainConfig  # noqa: E402
from n2sr.io import checkpoints  # noqa: E402
from n2sr.io.provenance import versions  # noqa: E402
from n2sr.steps.train import train_planes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EVERY = ["Confocal_BPAE_B", "Confocal_BPAE_G", "Confocal_BPAE_R", "Confocal_FISH", "Confocal_MICE",
         "W2S_ch0", "W2S_ch1", "W2S_ch2"]
FOLDS = [["Confocal_BPAE_B", "Confocal_BPAE_G", "Confocal_BPAE_R"], ["Confocal_FISH", "Confocal_MICE"]]


def generic(others: list[Case], minutes: float, path: Path, seed: int, quiet: bool, reuse: bool) -> dict:
    """Train the generic model on every plane of `others` (or keep the one at `path`); what it
    saw and how long it took."""
    planes = [p for case in others for p in case.train]
    seen = {"configurations": [c.name for c in others], "planes": len(planes), "minutes": minutes}
    if reuse and path.is_file():
        ckpt = checkpoints.load(path)
        return {**seen, "iterations": ckpt["steps"], "seconds": round(ckpt["seconds"], 1)}
    t0 = time.monotonic()
    result = train_planes(planes, path, TrainConfig(minutes=minutes, iterations=10**9, seed=seed), progress=not quiet)
    return {**seen, "iterations": result.steps, "seconds": round(time.monotonic() - t0, 1)}


def markdown(frame: pd.DataFrame, generics: list[dict], args: argparse.Namespace) -> str:
    lines = ["# Warm start from a generic model against scratch", "",
             f"`benchmarks/warm_start.py {' '.join(args.argv)}` on {time.strftime('%Y-%m-%d')}, torch threads "
             f"{torch.get_num_threads()}. Mean PSNR (dB, per-image range) over the scored images, as "
             "`quality_budget.py` scores them; "
             + ("the generic models also saw the fold's own training planes." if args.include_fold
                else "each configuration's generic model never saw it."), "",
             "**generic models**", ""]
    for g in generics:
        lines.append(f"- for {', '.join(g['fold'])}: {g['iterations']} iterations in {g['seconds']} s on "
                     f"{g['planes']} planes of {', '.join(g['configurations'])}")
    mean = frame.pivot_table(index="configuration", columns=["minutes", "arm"], values="psnr_per_image",
                             aggfunc="mean", sort=False)
    table = pd.DataFrame(index=mean.index)
    for minutes in sorted(frame.minutes.unique()):
        table[f"scratch {minutes:g} min"] = mean[(minutes, "scratch")]
        table[f"warm {minutes:g} min"] = mean[(minutes, "warm")]
        table[f"gain {minutes:g} min"] = mean[(minutes, "warm")] - mean[(minutes, "scratch")]
    its = frame.groupby(["configuration", "minutes", "arm"], sort=False).iterations.first().unstack(["minutes", "arm"])
    its.columns = [f"{arm} {m:g} min" for m, arm in its.columns]
    lines += ["", "**PSNR, per-image range**", "", table.round(2).to_markdown(), "",
              "**iterations reached**", "", its.to_markdown(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 2])
    p.add_argument("--generic-minutes", type=float, default=5)
    p.add_argument("--folds", nargs="+", default=None, metavar="A,B,...",
                   help="comma-separated configurations per fold (default: BPAE | FISH, MICE)")
    p.add_argument("--include-fold", action="store_true", help="the generic model also learns from the fold")
    p.add_argument("--reuse", action="store_true", help="keep a generic model already at its path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--name", default="warm_start")
    p.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "n2sr-warm-start")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if not fmd_root().is_dir():
        print(f"data not found at {fmd_root().parent}; set N2SR_DATA", file=sys.stderr)
        return 2
    folds = [f.split(",") for f in args.folds] if args.folds else FOLDS
    by_name = {c.name: c for c in cases(EVERY, 3)}
    rows: list[dict] = []
    generics: list[dict] = []
    for i, fold in enumerate(folds):
        path = args.models_dir / f"generic-fold{i}.pt"
        others = [by_name[n] for n in EVERY if args.include_fold or n not in fold]
        g = generic(others, args.generic_minutes, path, args.seed, args.quiet, args.reuse)
        generics.append({"fold": fold, **g})
        for name in fold:
            for minutes in args.minutes:
                for arm, overrides in (("scratch", {}), ("warm", {"init": str(path)})):
                    run = argparse.Namespace(**{**vars(args), "models_dir": args.models_dir / arm})
                    run.models_dir.mkdir(parents=True, exist_ok=True)
                    rows += [{**r, "arm": arm} for r in train_and_score(by_name[name], minutes, overrides, run)]
                frame = pd.DataFrame(rows)
                frame.to_csv(args.out_dir / f"{args.name}.csv", index=False)
                (args.out_dir / f"{args.name}.md").write_text(markdown(frame, generics, args))
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(
        {"argv": args.argv, "generics": generics, "versions": versions(), "threads": torch.get_num_threads()},
        indent=2))
    print(markdown(pd.DataFrame(rows), generics, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
