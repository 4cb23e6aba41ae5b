"""Warm start against scratch (issue 13): PSNR per CPU-minute of a fine-tuned generic model on
configurations the generic model never saw.

Folds of ``../shared/data``'s configurations: for each fold, a generic model is trained (the
fast recipe, ``--generic-minutes``) on the training planes of every configuration *outside* the
fold (FMD and W2S, as ``quality_budget.py`` defines them). Every configuration in the fold is
scored with the generic model as it is (no fine-tuning, "generic as is"), then trained for each
budget twice with the same seed, from scratch and from the generic model (``train.init``), one
arm after the other so they share the machine's load. Scores as ``quality_budget.py`` (BPAE_B
on held-out FOVs 17-18, the rest in-sample).

With ``--include-fold`` the generic model also learns from the fold's own training planes, as
the workflow's ``train.init: generic`` does (self-supervised: the images to denoise are fair
training data); ``--reuse`` keeps a generic model already at its path.

    .venv/bin/python benchmarks/warm_start.py --minutes 1 2 --generic-minutes 5
    .venv/bin/python benchmarks/warm_start.py --folds Confocal_BPAE_B,Confocal_FISH --include-fold \
        --generic-minutes 10 --minutes 1 --arms warm --models-dir /tmp/generic-seen

(the runs behind ``benchmarks/results/warm_start.md`` are listed there).
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
from quality_budget import Case, cases, score_checkpoint, train_and_score  # noqa: E402
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
    result = train_planes(planes, path, TrainConfig(minutes=minutes, iterations=10**9, seed=seed, whiten=False), progress=not quiet)
    return {**seen, "iterations": result.steps, "seconds": round(time.monotonic() - t0, 1)}


def markdown(frame: pd.DataFrame, generics: list[dict], args: argparse.Namespace) -> str:
    lines = ["# Warm start from a generic model against scratch", "",
             f"`benchmarks/warm_start.py {' '.join(args.argv)}` on {time.strftime('%Y-%m-%d')}, torch threads "
             f"{torch.get_num_threads()}. Mean PSNR (dB, per-image range) over the scored images, as "
             "`quality_budget.py` scores them"
             + ("" if args.warm_lr is None else f"; the warm arm's peak lr {args.warm_lr:g}") + "; "
             + ("the generic models also saw the fold's own training planes." if args.include_fold
                else "each configuration's generic model never saw it."), "",
             "**generic models**", ""]
    for g in generics:
        lines.append(f"- for {', '.join(g['fold'])}: {g['iterations']} iterations in {g['seconds']} s on "
                     f"{g['planes']} planes of {', '.join(g['configurations'])}")
    mean = frame.pivot_table(index="configuration", columns=["minutes", "arm"], values="psnr_per_image",
                             aggfunc="mean", sort=False)
    table = pd.DataFrame(index=mean.index)
    if (0.0, "warm") in mean:
        table["generic as is"] = mean[(0.0, "warm")]
    for minutes in sorted(m for m in frame.minutes.unique() if m > 0):
        for arm in ("scratch", "warm"):
            if (minutes, arm) in mean:
                table[f"{arm} {minutes:g} min"] = mean[(minutes, arm)]
        if (minutes, "scratch") in mean and (minutes, "warm") in mean:
            table[f"gain {minutes:g} min"] = mean[(minutes, "warm")] - mean[(minutes, "scratch")]
    lines += ["", "**PSNR, per-image range**", "", table.round(2).to_markdown(), ""]
    tuned = frame[frame.minutes > 0]
    if len(tuned):
        its = tuned.groupby(["configuration", "minutes", "arm"], sort=False).iterations.first()
        its = its.unstack(["minutes", "arm"])
        its.columns = [f"{arm} {m:g} min" for m, arm in its.columns]
        lines += ["**iterations reached**", "", its.to_markdown(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, nargs="*", default=[1, 2], help="fine-tuning budgets (none: the generic as is only)")
    p.add_argument("--generic-minutes", type=float, default=5)
    p.add_argument("--folds", nargs="+", default=None, metavar="A,B,...",
                   help="comma-separated configurations per fold (default: BPAE | FISH, MICE)")
    p.add_argument("--include-fold", action="store_true", help="the generic model also learns from the fold")
    p.add_argument("--only", nargs="+", metavar="CONFIG", help="fine-tune and score only these (folds unchanged)")
    p.add_argument("--arms", nargs="+", choices=["scratch", "warm"], default=["scratch", "warm"])
    p.add_argument("--warm-lr", type=float, default=None, help="the warm arm's peak lr (default: the recipe's)")
    p.add_argument("--reuse", action="store_true", help="keep a generic model already at its path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--name", default="warm_start")
    p.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "n2sr-warm-start")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--merge", type=Path, nargs="+", metavar="CSV",
                   help="train nothing: --name's tables from these runs' CSVs (and their .json), later rows first")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.merge:
        frame = pd.concat([pd.read_csv(f) for f in reversed(args.merge)], ignore_index=True)
        frame = frame.drop_duplicates(["configuration", "image", "minutes", "arm"], keep="first")
        frame = frame.sort_values("configuration", key=lambda c: c.map(EVERY.index), kind="stable")
        generics = {json.dumps(g["fold"]): g for f in args.merge
                    for g in json.loads(f.with_suffix(".json").read_text())["generics"]}
        frame.to_csv(args.out_dir / f"{args.name}.csv", index=False)
        text = markdown(frame, list(generics.values()), args)
        (args.out_dir / f"{args.name}.md").write_text(text)
        print(text)
        return 0
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
        for name in [n for n in fold if not args.only or n in args.only]:  # as it is, then fine-tuned
            rows += [{**r, "arm": "warm", "minutes": 0.0, "iterations": 0, "train_seconds": 0.0}
                     for r in score_checkpoint(by_name[name], path)]
            for minutes in args.minutes:
                warm = {"init": str(path), **({} if args.warm_lr is None else {"lr": args.warm_lr})}
                for arm, overrides in (a for a in (("scratch", {}), ("warm", warm)) if a[0] in args.arms):
                    run = argparse.Namespace(**{**vars(args), "models_dir": args.models_dir / arm})
                    run.models_dir.mkdir(parents=True, exist_ok=True)
                    rows += [{**r, "arm": arm} for r in train_and_score(by_name[name], minutes, overrides, run)]
                save(pd.DataFrame(rows), generics, args)
        save(pd.DataFrame(rows), generics, args)
    print(markdown(pd.DataFrame(rows), generics, args))
    return 0


def save(frame: pd.DataFrame, generics: list[dict], args: argparse.Namespace) -> None:
    frame.to_csv(args.out_dir / f"{args.name}.csv", index=False)
    (args.out_dir / f"{args.name}.md").write_text(markdown(frame, generics, args))
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(
        {"argv": args.argv, "generics": generics, "versions": versions(), "threads": torch.get_num_threads()},
        indent=2))


if __name__ == "__main__":
    sys.exit(main())
