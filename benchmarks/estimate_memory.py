"""Peak memory of the reference-free estimates of one large plane (issue 15), as the plane grows.

Claim under test: with `denoise.estimate_pixels` set, the estimates of a plane read only their
crops (`n2sr.io.planes.PlaneView`), fit the noise on them, and the evaluate step's columns
(`n2sr.estimate.columns`) measure them there too, so their memory does not grow with the plane.
For contrast, the same plane estimated whole (``estimate_pixels: 0``).

Planes: uint16 Poisson-Gaussian noise on a smooth synthetic image, 2048^2 to 8192^2 (8 MB to
128 MB), in a Zarr array of 1024^2 chunks. The denoiser is a Gaussian blur with the engine's
interface (no network: the claim is about the estimates, not the passes). Each measurement runs
in its own subprocess (peak RSS, ``VmHWM``, as `benchmarks/memory.py`), after importing everything, so the numbers are
the estimates' own high-water mark above the interpreter's.

    .venv/bin/python benchmarks/estimate_memory.py [--sides 2048 4096 8192] [--out benchmarks/results]

Writes ``estimate_memory.json`` and ``estimate_memory.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import REPO, peak_rss  # noqa: E402
PIXELS = 262144  # denoise.estimate_pixels' default


class Blur:
    """A local denoiser with the runner's interface (`n2sr.nn.probe.Runner`)."""

    context = 32

    def denoise_window(self, planes, window, return_sr=False, dtype=None):
        from scipy import ndimage

        origin, (y0, x0, y1, x1), _ = window
        out = ndimage.gaussian_filter(np.asarray(planes, np.float32), (0, 1.5, 1.5))
        return out[:, y0 - origin[0]:y1 - origin[0], x0 - origin[1]:x1 - origin[1]], None

    def denoise_array(self, arr, return_sr=False, progress=True):
        from scipy import ndimage

        out = ndimage.gaussian_filter(np.asarray(arr, np.float32), 1.5)
        return out, (out.repeat(2, -2).repeat(2, -1) if return_sr else None)


def make_plane(path: Path, side: int) -> None:
    """A (1, side, side) uint16 Zarr of Poisson-Gaussian noise on smooth structure, written in bands."""
    import zarr

    arr = zarr.create_array(str(path), shape=(1, side, side), chunks=(1, 1024, 1024), dtype="uint16")
    rng = np.random.default_rng(0)
    xx = np.arange(side)
    for y0 in range(0, side, 1024):
        yy = np.arange(y0, min(side, y0 + 1024))[:, None]
        clean = 400 + 300 * np.sin(yy / 37.0) * np.cos(xx[None, :] / 53.0)
        arr[0, y0:y0 + len(yy)] = np.clip(rng.poisson(clean / 4.0) * 4.0 + rng.normal(0, 5, clean.shape), 0, 65535)


def measure(path: str, what: str, pixels: int) -> dict:
    """In this (fresh) process: peak RSS above the baseline of the probe estimates (`probe`) or of
    the evaluate step's columns of the noisy plane (`columns`)."""
    from n2sr import estimate
    from n2sr.io.planes import PlaneView, select
    from n2sr.nn.probe import plane_estimates

    selection = select(path)
    view = PlaneView(selection, (0,))
    base = peak_rss() / 2**20
    if what == "probe":
        entry = plane_estimates(Blur(), view, lambda: Blur().denoise_array(view[:, :])[0], method="n2v",
                                settings=None, sr=False, draws=0, seed=0, pixels=pixels)
        counted = entry["pixels"]
    else:  # evaluate holds the plane in its source dtype; the columns' float copies are what is measured
        plane = selection[0, ...]
        base = peak_rss() / 2**20
        counted = estimate.columns(plane, plane, None, 65535.0, identity=True, pixels=pixels)["est_pixels"]
    peak = peak_rss() / 2**20
    return {"what": what, "estimate_pixels": pixels, "pixels_used": counted, "base_mb": base,
            "peak_mb": peak, "peak_above_base_mb": peak - base}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--one", nargs=3, metavar=("ZARR", "WHAT", "PIXELS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], int(args.one[2]))))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="n2sr-estimate-memory-") as tmp:
        for side in args.sides:
            path = Path(tmp) / f"plane{side}.zarr"
            make_plane(path, side)
            for what in ("probe", "columns"):
                for pixels in (PIXELS, 0):
                    out = subprocess.run([sys.executable, __file__, "--one", str(path), what, str(pixels)],
                                         check=True, capture_output=True, text=True, cwd=REPO).stdout
                    row = {"side": side, "plane_mb_uint16": side * side * 2 / 2**20, **json.loads(out)}
                    rows.append(row)
                    print(row, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "estimate_memory.json").write_text(json.dumps(rows, indent=1))
    lines = ["# Peak memory of the reference-free estimates of one plane (`benchmarks/estimate_memory.py`)", "",
             "Peak RSS (MB) of the process, and above its baseline (the high-water mark before the estimates: "
             "imports, and for `columns` the plane itself; 0 = the estimates stayed under it); `probe`: `n2sr.nn.probe.plane_estimates` reading a "
             "Zarr plane through `PlaneView` (SURE; a blur as the denoiser); `columns`: the evaluate step's "
             "`n2sr.estimate.columns` of the noisy plane (held in memory as uint16 first, not counted). "
             f"`estimate_pixels` {PIXELS} (the default) against 0 (the whole plane).", "",
             "| plane | uint16 MB | what | estimate_pixels | pixels used | baseline MB | peak MB | above baseline MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['side']}^2 | {r['plane_mb_uint16']:.0f} | {r['what']} | {r['estimate_pixels']} | "
                     f"{r['pixels_used']:.0f} | {r['base_mb']:.0f} | {r['peak_mb']:.0f} | {r['peak_above_base_mb']:.0f} |")
    (args.out / "estimate_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
