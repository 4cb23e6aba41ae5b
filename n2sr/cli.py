"""Command line: argument parsing only. Each command is a row of `COMMANDS` and calls one step.

Rule name = command = step module = step function: ``n2sr ingest`` calls
``n2sr.steps.ingest.ingest`` (``add-noise`` -> ``add_noise``). Options of the config
dataclasses are generated from `n2sr.config` (`n2sr.options`), so a config key, its CLI option and the
dataclass field are one name (``tile_size`` <-> ``--tile-size``) and cannot drift. Steps are
imported only when their command runs, so ``n2sr ingest`` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from n2sr import __version__
from n2sr.config import METHOD_CONFIGS, REFERENCE_POLICIES, DenoiseConfig, IngestConfig, ModelConfig, TrainConfig
from n2sr.errors import InputError
from n2sr.options import add_dataclass_options, collect

METHODS = ("n2sr", *METHOD_CONFIGS)  # trained methods; n2sr.nn.objectives checks the same names


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


def _captures_option(p: argparse.ArgumentParser, what: str = "t indices of a Zarr input") -> None:
    p.add_argument("--captures", type=_captures, help=f"{what}, e.g. 0,1,3-5 (default: all)")


def _synth(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict]:
    p.add_argument("out_dir", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spec", type=Path, help="YAML file with the archive spec (default: built-in)")
    return lambda ns: {"out_dir": ns.out_dir, "seed": ns.seed, "spec": ns.spec}


def _add_noise(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict]:
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

    def kwargs(ns: argparse.Namespace) -> dict:
        from n2sr.steps.add_noise import parse_noise

        return {"root": ns.out_dir, "references": dict(ns.reference), "noise": dict(map(parse_noise, ns.noise)),
                "captures": ns.captures, "seed": ns.seed, "dtype": ns.dtype}

    return kwargs


def _source_out(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict]:
    p.add_argument("source", type=Path)
    p.add_argument("out", type=Path)
    return lambda ns: {"source": ns.source, "out_zarr": ns.out}


def _ingest(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict]:
    p.add_argument("source", type=Path)
    p.add_argument("out", type=Path)
    _part_option(p, "runs of whole planes of the same OME-Zarr; TIFF stacks")
    add_dataclass_options(p, IngestConfig)
    return lambda ns: {"source": ns.source, "out_zarr": ns.out, "cfg": collect(ns, IngestConfig), "part": ns.part}


def _reference(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict]:
    kwargs = _source_out(p)
    p.add_argument("--policy", choices=REFERENCE_POLICIES, default="auto",
                   help="file: SOURCE is a reference file; average: the mean of SOURCE's captures; none: no "
                        "reference (a marker saying why); auto: file, average of t > 1 captures, else none")
    return lambda ns: {**kwargs(ns), "policy": ns.policy}


def _train(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict]:
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--method", choices=METHODS, default="n2sr",
                   help="n2sr, or a baseline on the same U-Net: n2v, n2s, n2n (default: n2sr)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    _captures_option(p, "t indices of Zarr inputs to use")
    p.add_argument("--curve", type=Path, help="training curve CSV")
    p.add_argument("--plot", type=Path, help="training curve PNG")
    p.add_argument("--resume", action="store_true", help="continue from <out>.state if it matches")
    add_dataclass_options(p, TrainConfig)
    add_dataclass_options(p, ModelConfig)
    for method, cls in METHOD_CONFIGS.items():
        add_dataclass_options(p, cls, prefix=method)

    def kwargs(ns: argparse.Namespace) -> dict:
        cls = METHOD_CONFIGS.get(ns.method)
        return {"images": ns.images, "out": ns.out, "cfg": collect(ns, TrainConfig, model=collect(ns, ModelConfig)),
                "method": ns.method, "settings": collect(ns, cls, prefix=ns.method) if cls else None,
                "captures": ns.captures, "curve": ns.curve, "plot": ns.plot, "resume": ns.resume}

    return kwargs


def _adopt(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict]:
    p.add_argument("checkpoint", type=Path, help="a model trained before (.pt), e.g. an earlier run's")
    p.add_argument("--out", type=Path, required=True, help="the record of the checked model to write (adopted.json)")
    p.add_argument("--method", choices=METHODS, default="n2sr", help="the method it must be a model of")
    p.add_argument("--normalization", choices=["range", "meanstd"],
                   help="the normalisation it must have been trained with (default: not checked)")
    return lambda ns: {"checkpoint": ns.checkpoint, "out": ns.out, "method": ns.method,
                       "normalization": ns.normalization}


def _denoise(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict]:
    p.add_argument("model", type=Path)
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    _captures_option(p)
    p.add_argument("--sr", type=Path, help="also write the 2x super-resolved image here")
    p.add_argument("--tiff", type=Path, help="also export the denoised stack as TIFF")
    p.add_argument("--attempt", type=int, default=1, help="try number of the job; each retry halves the tile size")
    _part_option(p, "runs of whole blocks of the same output")
    _scanned_option(p)
    add_dataclass_options(p, DenoiseConfig)
    return lambda ns: {"model": ns.model, "input": ns.input, "output": ns.output, "cfg": collect(ns, DenoiseConfig),
                       "captures": ns.captures, "sr": ns.sr, "tiff": ns.tiff, "attempt": ns.attempt, "part": ns.part,
                       "scanned": ns.scanned}


def _export(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict]:
    p.add_argument("checkpoint", type=Path, help="a trained model (.pt)")
    p.add_argument("--out", type=Path, required=True, help="the bioimage.io package to write (.zip)")
    p.add_argument("--sample", type=Path,
                   help="an image whose first plane's centre (up to 256x256) is the test input (default: synthetic)")
    p.add_argument("--downsample", choices=["avgpool", "bilinear"], default=DenoiseConfig.downsample,
                   help="how a Noise2SR model's 2x output returns to the input grid, as denoise (default: %(default)s)")
    p.add_argument("--name", help="the model's name in the package (default: n2sr <method> denoiser)")
    return lambda ns: {"checkpoint": ns.checkpoint, "out": ns.out, "sample": ns.sample,
                       "downsample": ns.downsample, "name": ns.name}


def _part_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--part", metavar="STAGE/K",
                   help=f"one stage of a job scattered over K parts ({what}): prepare/K, k/K (1-based) or gather/K")


def _scanned_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scanned", action="store_true",
                   help="a point-scanning microscope's data (confocal, multiphoton): the reference-free estimates "
                        "take its noise as correlated along the scan lines (x) only")


def _bm3d(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict]:
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    _captures_option(p)
    p.add_argument("--tiff", type=Path, help="also export the denoised stack as TIFF")
    p.add_argument("--pyramid", type=int, default=DenoiseConfig.pyramid,
                   help="multiscale levels of a Zarr output down to this plane side; 0: none (default: %(default)s)")
    p.add_argument("--estimate", action=argparse.BooleanOptionalAction, default=True,
                   help="reference-free SURE of each plane: one more BM3D run per plane (default: on)")
    p.add_argument("--estimate-pixels", type=int, default=DenoiseConfig.estimate_pixels,
                   help="a larger plane's SURE from crops of about this many pixels (two BM3D runs on them); "
                        "0: the whole plane (default: %(default)s)")
    _scanned_option(p)
    return lambda ns: {"input": ns.input, "output": ns.output, "captures": ns.captures, "tiff": ns.tiff,
                       "pyramid": ns.pyramid, "estimate": ns.estimate, "estimate_pixels": ns.estimate_pixels,
                       "scanned": ns.scanned}


def _evaluate(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict]:
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--reference", type=Path, required=True,
                   help="the reference, or the marker of none (n2sr reference --policy): then estimates only")
    p.add_argument("--noisy", type=Path,
                   help="the noisy input the images were denoised from, for the residual check of the estimates")
    _captures_option(p, "t indices of Zarr inputs to evaluate")
    p.add_argument("--data-range", type=float,
                   help="fixed data range (default: the reference dtype's full scale, where the data can fill it)")
    p.add_argument("--bits", type=int, help="bit depth of the data: fixed data range 2**bits - 1 (e.g. 12)")
    p.add_argument("--csv", type=Path, help="write per-image rows here")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="column added to every row (e.g. configuration=A); repeatable")
    p.add_argument("--method", action="append", default=[],
                   help="method name of each image in order (default: the file stem)")
    p.add_argument("--estimate-pixels", type=int, default=DenoiseConfig.estimate_pixels,
                   help="as denoise's: a larger plane's noise fit and residual check from crops of about this many "
                        "pixels; 0: the whole plane (default: %(default)s)")
    _part_option(p, "runs of whole captures, rows concatenated into --csv by gather/K")
    _scanned_option(p)
    return lambda ns: {"reference": ns.reference, "images": ns.images, "csv": ns.csv, "data_range": ns.data_range,
                       "bits": ns.bits, "captures": ns.captures, "labels": dict(item.split("=", 1) for item in ns.label),
                       "methods": ns.method, "part": ns.part, "noisy": ns.noisy,
                       "estimate_pixels": ns.estimate_pixels, "scanned": ns.scanned}


def _crops(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict]:
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--reference", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--capture", type=int, default=0, help="which capture to show (original t index)")
    p.add_argument("--methods", type=lambda t: [m for m in t.split(",") if m], default=[],
                   help="panel names of the images, comma-separated, in order (default: the file stems)")
    p.add_argument("--size", type=int, default=128, help="crop side in pixels")
    p.add_argument("--title", default="")
    return lambda ns: {"reference": ns.reference, "images": ns.images, "out": ns.out, "capture": ns.capture,
                       "methods": ns.methods, "size": ns.size, "title": ns.title}


def _summarize(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict]:
    p.add_argument("csvs", nargs="+", type=Path)
    p.add_argument("--out-dir", type=Path, required=True)
    return lambda ns: {"per_image_csvs": ns.csvs, "out_dir": ns.out_dir}


class Command(NamedTuple):
    help: str
    arguments: Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], dict]]


COMMANDS: dict[str, Command] = {
    "synth": Command("generate the embedded synthetic demo archive", _synth),
    "add-noise": Command("the paper's synthetic experiment: stored noisy copies of clean references", _add_noise),
    "ingest": Command("raw stack, file or folder series -> OME-Zarr", _ingest),
    "reference": Command("reference of a field of view -> OME-Zarr: the average of an OME-Zarr's captures (t), "
                         "or a given reference file converted, or none (--policy)", _reference),
    "train": Command("train a Noise2SR (or baseline) model on noisy images", _train),
    "adopt": Command("check a model trained before and use it as this run's (instead of training)", _adopt),
    "denoise": Command("denoise an image or stack with a trained model", _denoise),
    "export": Command("write a trained model as a BioImage Model Zoo package (deepImageJ, ilastik, napari), "
                      "tested with bioimageio.core", _export),
    "bm3d": Command("denoise an image or stack with BM3D (noise estimated from each plane)", _bm3d),
    "evaluate": Command("PSNR/SSIM of images against a reference", _evaluate),
    "crops": Command("before/after crops of one capture as a PNG (for the report)", _crops),
    "summarize": Command("per-configuration and overall summary CSVs", _summarize),
}


def step(command: str) -> Callable[..., Any]:
    """The step function of `command`: ``n2sr.steps.<module>.<module>``."""
    module = command.replace("-", "_")
    return getattr(importlib.import_module(f"n2sr.steps.{module}"), module)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="n2sr", description="Noise2SR denoising of fluorescence microscopy images.",
                                     epilog="n2sr batch --job LOG COMMAND [--job LOG COMMAND ...]: several commands "
                                            "in one process, each logged to its LOG (n2sr batch --help)")
    parser.add_argument("--version", action="version", version=f"n2sr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help)
        p.set_defaults(kwargs=command.arguments(p))
    return parser


def _print_scores(rows: list[dict]) -> None:
    print(f"{'method':<10} {'image':<32} {'PSNR':>8} {'SSIM':>7}   {'PSNR*':>8} {'SSIM*':>7}   "
          f"{'estSURE':>8} {'estHeld':>8}")
    for r in rows:
        print(f"{r['method']:<10} {r['image']:<32} {r['psnr']:8.2f} {r['ssim']:7.4f}   "
              f"{r['psnr_per_image']:8.2f} {r['ssim_per_image']:7.4f}   "
              f"{r.get('est_psnr_sure', float('nan')):8.2f} {r.get('est_psnr_held_out', float('nan')):8.2f}")
    print(f"PSNR/SSIM: fixed data range ({rows[0]['data_range']:g}); "
          "PSNR*/SSIM*: per-image range ref.max()-ref.min() (the authors' convention); "
          "estSURE/estHeld: reference-free PSNR estimates (fixed range; n2sr/estimate.py)")
    reasons = sorted({r["no_reference"] for r in rows if r.get("no_reference")})
    if reasons:
        print("no reference: " + "; ".join(reasons))


def batch(argv: Sequence[str]) -> int:
    """`n2sr batch`: several commands in one process (the workflow's batch_size), so an archive of
    many small images pays the interpreter's and the libraries' start-up (~0.4-1.5 s) once per
    batch instead of once per file. Each command runs exactly as `n2sr <command>` would, its output
    in its own log; every command runs even when one fails, and the exit status says if any did."""
    parser = argparse.ArgumentParser(prog="n2sr batch", description=batch.__doc__.split("\n")[0])
    parser.add_argument("--job", nargs=2, action="append", required=True, metavar=("LOG", "COMMAND"),
                        help="a log file and an n2sr command line (shell-quoted words, without 'n2sr')")
    parser.add_argument("--append", default="", help="words appended to every command (e.g. '--attempt 2')")
    ns = parser.parse_args(argv)
    handler = logging.StreamHandler()  # pointed at each command's log in turn
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    failed = []
    for log, command in ns.job:
        words = [*shlex.split(command), *shlex.split(ns.append)]
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as out, redirect_stdout(out), redirect_stderr(out):
            previous = handler.setStream(out)
            try:
                status = main(words)
            except SystemExit as exc:  # argparse's errors
                status = exc.code if isinstance(exc.code, int) else 2
            except Exception:  # one command's failure must not stop the others
                traceback.print_exc()
                status = 1
            finally:
                handler.setStream(previous)
        if status:
            failed.append(log)
        print(f"n2sr batch: {'FAILED' if status else 'done'}: n2sr {shlex.join(words)} (log: {log})", flush=True)
    root.removeHandler(handler)
    if failed:
        print(f"n2sr batch: {len(failed)} of {len(ns.job)} commands failed; see " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["batch"]:
        return batch(argv[1:])
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = step(ns.command)(**ns.kwargs(ns))
    except (InputError, ValueError, OSError) as exc:
        if ns.verbose:
            raise
        print(f"n2sr: error: {exc}", file=sys.stderr)
        return 1
    if ns.command == "evaluate" and result:
        _print_scores(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
