"""Command line: argument parsing only; each command calls one step function.

Options are generated from the step's config dataclass, so a config key, its CLI option
and the dataclass field are one name (``tile_size`` <-> ``--tile-size``) and cannot drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any, Sequence

from n2sr import __version__


def _option_type(tp: Any) -> tuple[Any, Sequence[Any] | None]:
    """argparse type and choices for a dataclass field annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _option_type(args[0])
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        return type(choices[0]), choices
    return tp, None


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = (),
                          aliases: dict[str, str] | None = None) -> None:
    """One ``--field-name`` option per field (plus any short alias); defaults stay in the dataclass."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or dataclasses.is_dataclass(hints[f.name]):
            continue
        flags = ["--" + f.name.replace("_", "-"), *([aliases[f.name]] if aliases and f.name in aliases else [])]
        tp, choices = _option_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if tp is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=None, help=f"(default: {default})")
        else:
            parser.add_argument(*flags, type=tp, choices=choices, default=None, help=f"(default: {default})")


def collect(ns: argparse.Namespace, cls: type, **extra: Any) -> Any:
    """Build ``cls`` from the options the user gave, leaving the rest at their defaults."""
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if getattr(ns, f.name, None) is not None}
    return cls(**values, **extra)


def _captures(text: str) -> list[int]:
    """``0,2,5-7`` -> [0, 2, 5, 6, 7]."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _name_value(text: str) -> tuple[str, str]:
    """``NAME=PATH`` -> (NAME, PATH); the path may itself contain '='."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    from n2sr.denoise import DenoiseConfig
    from n2sr.model import ModelConfig
    from n2sr.objectives import OBJECTIVES
    from n2sr.train import TrainConfig

    parser = argparse.ArgumentParser(prog="n2sr", description="Noise2SR denoising of fluorescence microscopy images.")
    parser.add_argument("--version", action="version", version=f"n2sr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate the embedded synthetic demo archive")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spec", type=Path, help="YAML file with the archive spec (default: built-in)")

    p = sub.add_parser("add-noise", help="the paper's synthetic experiment: stored noisy copies of clean references")
    p.add_argument("out_dir", type=Path, help="noise model NAME goes to OUT_DIR/NAME/, with its manifest.csv")
    p.add_argument("--reference", action="append", required=True, type=_name_value, metavar="NAME=PATH",
                   help="a clean 0-255 image; NAME becomes its FOV folder; repeatable")
    p.add_argument("--noise", action="append", required=True, metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                   help="a noise model (one configuration): lam (photons at 255) and/or sigma; repeatable, "
                        "e.g. gaussian_s15:sigma=15 poisson_l20:lam=20 mixed:lam=15,sigma=5")
    p.add_argument("--captures", type=int, default=2, help="independent noisy copies per reference (default: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "uint8"], default="float32",
                   help="float32: exact noise statistics; uint8: clipped and rounded (default: float32)")

    p = sub.add_parser("ingest", help="raw stack, file or folder series -> OME-Zarr")
    p.add_argument("source", type=Path)
    p.add_argument("out", type=Path)

    p = sub.add_parser("reference", help="average repeated captures (t axis) -> OME-Zarr reference")
    p.add_argument("source", type=Path)
    p.add_argument("out", type=Path)

    p = sub.add_parser("train", help="train a Noise2SR (or baseline) model on noisy images")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--method", choices=sorted(OBJECTIVES), default="n2sr",
                   help="n2sr, or a baseline on the same U-Net: n2v, n2s, n2n (default: n2sr)")
    p.add_argument("--pairs", choices=["captures"], default="captures",
                   help="n2n: where the noisy pairs come from (captures: consecutive captures of each image)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    p.add_argument("--captures", type=_captures, help="t indices of Zarr inputs to use, e.g. 0,1,3-5")
    p.add_argument("--curve", type=Path, help="training curve CSV")
    p.add_argument("--plot", type=Path, help="training curve PNG")
    p.add_argument("--resume", action="store_true", help="continue from <out>.state if it matches")
    add_dataclass_options(p, TrainConfig)
    add_dataclass_options(p, ModelConfig)

    p = sub.add_parser("denoise", help="denoise an image or stack with a trained model")
    p.add_argument("model", type=Path)
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--captures", type=_captures, help="t indices of a Zarr input to denoise")
    p.add_argument("--sr", type=Path, help="also write the 2x super-resolved image here")
    p.add_argument("--tiff", type=Path, help="also export the denoised stack as TIFF")
    add_dataclass_options(p, DenoiseConfig, aliases={"tile_size": "--tile"})

    p = sub.add_parser("bm3d", help="denoise an image or stack with BM3D (noise estimated from each plane)")
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--captures", type=_captures, help="t indices of a Zarr input to denoise")
    p.add_argument("--tiff", type=Path, help="also export the denoised stack as TIFF")

    p = sub.add_parser("evaluate", help="PSNR/SSIM of images against a reference")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--reference", type=Path, required=True)
    p.add_argument("--captures", type=_captures, help="t indices of Zarr inputs to evaluate")
    p.add_argument("--data-range", type=float, help="fixed data range (default: the reference dtype's max)")
    p.add_argument("--csv", type=Path, help="write per-image rows here")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="column added to every row (e.g. configuration=A); repeatable")
    p.add_argument("--method", action="append", default=[],
                   help="method name of each image in order (default: the file stem)")

    p = sub.add_parser("crops", help="before/after crops of one capture as a PNG (for the report)")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--reference", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--capture", type=int, default=0, help="which capture to show (original t index)")
    p.add_argument("--method", action="append", default=[], help="panel name of each image in order")
    p.add_argument("--size", type=int, default=128, help="crop side in pixels")
    p.add_argument("--title", default="")

    p = sub.add_parser("summarize", help="per-configuration and overall summary CSVs")
    p.add_argument("csvs", nargs="+", type=Path)
    p.add_argument("--out-dir", type=Path, required=True)
    return parser


def run(ns: argparse.Namespace) -> None:
    from n2sr import steps
    from n2sr.accel import set_threads

    set_threads()  # the cores SLURM or the affinity mask gave us, not the whole node's

    if ns.command == "synth":
        steps.synth_step(ns.out_dir, seed=ns.seed, spec=ns.spec)
    elif ns.command == "add-noise":
        from n2sr.synthetic_noise import make_noise_archive, parse_noise

        make_noise_archive(ns.out_dir, dict(ns.reference), dict(map(parse_noise, ns.noise)), captures=ns.captures,
                           seed=ns.seed, dtype=ns.dtype)
    elif ns.command == "ingest":
        from n2sr.ingest import ingest

        ingest(ns.source, ns.out)
    elif ns.command == "reference":
        from n2sr.reference import reference_zarr

        reference_zarr(ns.source, ns.out)
    elif ns.command == "train":
        from n2sr.model import ModelConfig
        from n2sr.train import TrainConfig

        cfg = collect(ns, TrainConfig, model=collect(ns, ModelConfig))
        steps.train_step(ns.images, ns.out, cfg, captures=ns.captures, curve=ns.curve, plot=ns.plot, resume=ns.resume,
                         method=ns.method, pairs=ns.pairs)
    elif ns.command == "denoise":
        from n2sr.denoise import DenoiseConfig

        steps.denoise_step(ns.model, ns.input, ns.output, collect(ns, DenoiseConfig),
                           captures=ns.captures, sr=ns.sr, tiff=ns.tiff)
    elif ns.command == "bm3d":
        steps.bm3d_step(ns.input, ns.output, captures=ns.captures, tiff=ns.tiff)
    elif ns.command == "evaluate":
        labels = dict(item.split("=", 1) for item in ns.label)
        rows = steps.evaluate_step(ns.reference, ns.images, csv=ns.csv, data_range=ns.data_range,
                                   captures=ns.captures, labels=labels, methods=ns.method)
        print(f"{'method':<10} {'image':<32} {'PSNR':>8} {'SSIM':>7}   {'PSNR*':>8} {'SSIM*':>7}")
        for r in rows:
            print(f"{r['method']:<10} {r['image']:<32} {r['psnr']:8.2f} {r['ssim']:7.4f}   "
                  f"{r['psnr_per_image']:8.2f} {r['ssim_per_image']:7.4f}")
        print(f"PSNR/SSIM: fixed data range ({rows[0]['data_range']:g}); "
              "PSNR*/SSIM*: per-image range ref.max()-ref.min() (the authors' convention)")
    elif ns.command == "crops":
        steps.crops_step(ns.reference, ns.images, ns.out, capture=ns.capture, methods=ns.method, size=ns.size,
                         title=ns.title)
    elif ns.command == "summarize":
        from n2sr.evaluate import summarize

        summarize(ns.csvs, ns.out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(ns)
    except (ValueError, FileNotFoundError, OSError) as exc:
        if ns.verbose:
            raise
        print(f"n2sr: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
