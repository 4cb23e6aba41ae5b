"""Reference-free estimates on crops (`denoise.estimate_pixels`) against the whole plane's (issue 15).

The estimates of a plane larger than `estimate_pixels` are computed on `n2sr.regions.crops` of
about that many pixels. This measures, on real planes with references (FMD Confocal_BPAE_B,
W2S channel 0; single 512 x 512 frames and 2 x 2 mosaics of four FOVs, 1024 x 1024, standing in
for a large plane), for a small trained Noise2SR model on the default inference path (bf16,
overlap 32) and for BM3D:

* the estimated PSNRs (SURE, held-out) from crops of each size and layout (one central crop,
  ``tiles 1``, or a 2 x 2 grid, ``tiles 2``) minus the whole plane's, in dB;
* the true PSNR of the whole output and of the crops' pixels (how much of a difference is the
  crops' own content, not the estimator);
* CPU seconds, single-threaded, of the output pass and of the estimates, so the denoise step's
  speed-up; and the network input pixels of the estimate passes, counted, with what they are
  for a 20000 x 20000 plane (from the crop geometry).

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/estimate_cost.py --iterations 200
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import torch

from n2sr import estimate, regions
from n2sr.bm3d import REACH, bm3d_denoise
from n2sr.config import MULTIPLE, DenoiseConfig, ModelConfig
from n2sr.io import checkpoints
from n2sr.io.images import read_image
from n2sr.io.provenance import versions
from n2sr.metrics import psnr
from n2sr.nn.inference import Engine
from n2sr.nn.model import from_state, receptive_field
from n2sr.nn.normalize import Normalizer
from n2sr.nn.probe import plane_estimates
from n2sr.steps.bm3d import _sure as bm3d_sure
from reference_free import DATA, R, affine_to, train_model

RESULTS = Path(__file__).resolve().parent / "results"


def mosaic(planes: list[np.ndarray]) -> np.ndarray:
    """Four planes as one 2 x 2 mosaic."""
    return np.block([[planes[0], planes[1]], [planes[2], planes[3]]])


def datasets() -> list[dict]:
    b = DATA / "fmd" / "Confocal_BPAE_B"
    cap = lambda fov: sorted((b / "raw" / str(fov)).glob("*.png"))[0]  # noqa: E731
    gt = lambda fov: read_image(b / "gt" / str(fov) / "avg50.png").astype(np.float64)  # noqa: E731
    fmd = {"name": "fmd_bpae_b", "train": [read_image(cap(f)) for f in range(1, 15)],
           "test": [("fov17", read_image(cap(17)), gt(17)), ("fov18", read_image(cap(18)), gt(18)),
                    ("mosaic15-18", mosaic([read_image(cap(f)) for f in range(15, 19)]),
                     mosaic([gt(f) for f in range(15, 19)]))]}
    w2s = DATA / "w2s_8bit"
    pairs = [(p.name.split("_")[2], read_image(p).astype(np.float64),
              read_image(w2s / "avg400" / p.name.replace("input_avg1", "target_avg400")))
             for p in sorted((w2s / "avg1").glob("input_avg1_*_0.tif"))]
    pairs = [(f, n, affine_to(r, n)) for f, n, r in pairs]
    w = {"name": "w2s_ch0", "train": [n.astype(np.float32) for _, n, _ in pairs],
         "test": [(f"fov{pairs[2][0]}", *pairs[2][1:]),
                  (f"mosaic{pairs[0][0]}-{pairs[3][0]}", mosaic([p[1] for p in pairs[:4]]),
                   mosaic([p[2] for p in pairs[:4]]))]}
    return [fmd, w]


class Counting:
    """A runner that counts the input pixels handed to the network (network passes, in pixels)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.context, self.pixels = engine, engine.context, 0

    def denoise_window(self, planes, window, return_sr=False, dtype=None):
        self.pixels += int(np.size(planes))
        return self.engine.denoise_window(planes, window, return_sr, dtype)

    def denoise_array(self, arr, return_sr=False, progress=True):
        self.pixels += int(np.size(arr))
        return self.engine.denoise_array(arr, return_sr=return_sr, progress=progress)


def default_engine(ckpt: dict) -> Engine:
    """The user's default inference path (precision auto, overlap 32) on the CPU."""
    net = from_state(ckpt["model_config"], ckpt["scale"], ckpt["model"])
    return Engine(net, DenoiseConfig(device="cpu"), scale=ckpt["scale"],
                  receptive_field=receptive_field(ModelConfig(**ckpt["model_config"]), sr=True),
                  normalizer=Normalizer.from_dict(ckpt["normalizer"]))


MARGIN = {"n2sr": (DenoiseConfig().overlap, MULTIPLE), "bm3d": (REACH, 1)}  # the crops' (margin, align)


def crop_truth(out: np.ndarray, ref: np.ndarray, method: str, pixels: int, tiles: int) -> float:
    """The true PSNR over the pixels of the crops (the whole plane's where there are none)."""
    found = regions.crops(out.shape, pixels, *MARGIN[method], tiles=tiles)
    if found is None:
        return psnr(ref, out, R)
    err = np.concatenate([(out - ref)[y0:y1, x0:x1].ravel() for (y0, x0, y1, x1), _ in found])
    return estimate.mse_to_psnr(float(np.mean(err**2)), R)


def settings(shape: tuple[int, int], method: str, pixels: list[int], tiles: list[int]) -> list[tuple[int, int]]:
    """(pixels, tiles) to measure: the whole plane (0, 0), and every setting that gives crops
    (the others are the whole plane, by `n2sr.regions.crops`)."""
    return [(0, 0)] + [(p, t) for p in pixels for t in tiles
                       if regions.crops(shape, p, *MARGIN[method], tiles=t) is not None]


def run(args) -> pd.DataFrame:
    rows = []
    for d in datasets():
        t0 = time.process_time()
        _, ckpt = train_model("n2sr", d["train"], Path(args.models) / f"{d['name']}.pt", args)
        print(f"{d['name']}: trained in {time.process_time() - t0:.0f} CPU-s", flush=True)
        engine = default_engine(ckpt)
        for name, noisy, ref in d["test"]:
            y = noisy.astype(np.float64)
            for method in ("n2sr", "bm3d"):
                t0 = time.process_time()
                out = (engine.denoise_array(y.astype(np.float32), progress=False)[0] if method == "n2sr"
                       else bm3d_denoise(y)).astype(np.float64)
                output_s = time.process_time() - t0
                for pixels, tiles in settings(y.shape, method, args.pixels, args.tiles):
                    runner = Counting(engine)
                    t0 = time.process_time()
                    with mock.patch.object(regions, "CROP_TILES", tiles or regions.CROP_TILES):
                        entry = (plane_estimates(runner, y, out, method="n2sr", settings=None, sr=True,
                                                 draws=args.draws, seed=0, pixels=pixels) if method == "n2sr"
                                 else bm3d_sure(y, out, seed=0, pixels=pixels))
                    est_s = time.process_time() - t0
                    cols = estimate.columns(y, out, entry, R, identity=False)
                    rows.append({"dataset": d["name"], "plane": name, "shape": "x".join(map(str, y.shape)),
                                 "method": method, "estimate_pixels": pixels, "tiles": tiles,
                                 "pixels_used": entry["pixels"], "psnr": psnr(ref, out, R),
                                 "psnr_crops": crop_truth(out, ref, method, pixels, tiles),
                                 **{f"est_psnr_{e}{b}": cols[f"est_psnr_{e}{b}"]
                                    for e in ("sure", "held_out") for b in ("", "_lo", "_hi")},
                                 "pass_pixels": runner.pixels if method == "n2sr" else math.nan,
                                 "output_cpu_s": output_s, "estimate_cpu_s": est_s})
                    r = rows[-1]
                    print(f"  {name} {method} {pixels}/{tiles}: sure {r['est_psnr_sure']:.2f} held "
                          f"{r['est_psnr_held_out']:.2f} true {r['psnr']:.2f}/{r['psnr_crops']:.2f} "
                          f"est {est_s:.1f} s out {output_s:.1f} s", flush=True)
    return pd.DataFrame(rows)


def with_deltas(frame: pd.DataFrame) -> pd.DataFrame:
    """Each row against its plane's whole-plane row: estimate differences (dB) and step speed-up."""
    whole = frame[frame["estimate_pixels"] == 0].set_index(["dataset", "plane", "method"])
    out = frame.copy()
    key = list(zip(out["dataset"], out["plane"], out["method"]))
    for col in ("est_psnr_sure", "est_psnr_held_out"):
        ref = np.array([whole.loc[k, col] for k in key])
        out[f"d_{col[9:]}"] = out[col].to_numpy() - ref
        # the whole plane's estimate inside this row's 95 % interval (NaN where there is none)
        inside = (out[f"{col}_lo"].to_numpy() <= ref) & (ref <= out[f"{col}_hi"].to_numpy())
        out[f"in_ci_{col[9:]}"] = np.where(np.isnan(ref) | np.isnan(out[col].to_numpy()), np.nan, inside)
    step = out["output_cpu_s"] + out["estimate_cpu_s"]
    out["step_speedup"] = np.array([whole.loc[k, "output_cpu_s"] + whole.loc[k, "estimate_cpu_s"] for k in key]) / step
    return out


def pass_pixels_20k(draws: int, pixels: int, tiles: int) -> float:
    """Network input pixels of the n2sr estimate passes on a 20000 x 20000 plane (geometry only):
    the whole plane's SURE pass and `draws` quarter-size held-out passes, or the crops' windows
    (SURE: two passes with the context; held-out: `draws` quarter-size passes with twice that)."""
    shape, (context, align) = (20000, 20000), MARGIN["n2sr"]
    near = regions.crops(shape, pixels, context, align, tiles)
    if near is None:
        return shape[0] * shape[1] * (1 + draws / 4)
    return sum(2 * c.window_pixels + draws * c.widened(2 * context, shape, align).window_pixels / 4 for c in near)


def report(frame: pd.DataFrame, args) -> str:
    f = with_deltas(frame)
    lines = ["# Reference-free estimates on crops: cost and agreement with the whole plane", "",
             "`benchmarks/estimate_cost.py` (issue 15, `denoise.estimate_pixels`). Command:", "",
             f"    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/estimate_cost.py "
             f"--iterations {args.iterations} --features {args.features} --draws {args.draws}", "",
             f"Noise2SR: {args.iterations} iterations, features {args.features}, trained per dataset "
             "(FMD Confocal_BPAE_B FOVs 1-14 capture 0; W2S channel 0, its 5 FOVs); denoised on the default "
             "CPU path (precision auto = bf16 here, overlap 32); BM3D with the blind noise fit. Planes: single "
             "512 x 512 frames and 2 x 2 mosaics of four FOVs (1024 x 1024). PSNRs in dB, range 255. "
             "`d_sure`, `d_held_out`: estimate from crops minus the whole plane's. `psnr_crops`: the true PSNR "
             "over the crops' pixels. CPU seconds single-threaded (process time) on a shared 2-core machine; "
             "`step_speedup`: (output pass + estimates) of the whole-plane row over this row's. "
             "`pass_pixels`: network input pixels of the estimate passes (the output's own pass not counted). "
             "`in_ci_*`: the whole plane's estimate lies in this row's 95 % interval (1) or not (0). "
             "Layout `tiles` 1: one central crop; 2 (4): a 2 x 2 (4 x 4) grid, each crop centred in its cell. "
             "A setting whose crops would cost as much as the whole plane is the whole plane (not listed).", "",
             f.drop(columns=["dataset", *(c for c in f.columns if c.endswith(("_lo", "_hi")))]).to_markdown(
                 index=False, floatfmt=".2f"), ""]
    crops_only = f[f["estimate_pixels"] > 0]
    summary = crops_only.groupby(["method", "estimate_pixels", "tiles"]).agg(
        n=("plane", "size"), mean_abs_d_sure=("d_sure", lambda s: s.abs().mean()),
        max_abs_d_sure=("d_sure", lambda s: s.abs().max()),
        mean_abs_d_held_out=("d_held_out", lambda s: s.abs().mean()),
        in_ci_sure=("in_ci_sure", "mean"), in_ci_held_out=("in_ci_held_out", "mean"),
        mean_abs_truth_shift=("psnr_crops", lambda s: (s - crops_only.loc[s.index, "psnr"]).abs().mean()),
        mean_step_speedup=("step_speedup", "mean")).reset_index()
    lines += ["## Summary over planes", "", "`mean_abs_truth_shift`: mean |true PSNR of the crops - of the "
              "plane|, the part of a difference that is the crops' content; `in_ci_*`: share of planes whose "
              "whole-plane estimate lies in the crops' 95 % interval.", "",
              summary.to_markdown(index=False, floatfmt=".2f"), ""]
    big = [{"estimate_pixels": p, "tiles": t, "pass_pixels": pass_pixels_20k(args.draws, p, t)}
           for p, t in [(0, 0)] + [(p, t) for p in args.pixels for t in args.tiles]]
    lines += [f"## Network input pixels of the Noise2SR estimate passes on a 20000 x 20000 plane "
              f"(geometry; context {MARGIN['n2sr'][0]}, {args.draws} draws)", "",
              pd.DataFrame(big).to_markdown(index=False, floatfmt=".3g"), ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pixels", type=lambda s: [int(v) for v in s.split(",")], default=[65536, 262144])
    p.add_argument("--tiles", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4])
    p.add_argument("--models", default="/tmp/n2sr-estimate-cost")
    p.add_argument("--out", type=Path, default=RESULTS / "estimate_cost")
    args = p.parse_args()
    torch.set_num_threads(1)
    Path(args.models).mkdir(parents=True, exist_ok=True)
    frame = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out.with_suffix(".csv"), index=False)
    args.out.with_suffix(".md").write_text(report(frame, args))
    args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                         "versions": versions(), "bm3d_reach": REACH}, indent=1))


if __name__ == "__main__":
    main()
