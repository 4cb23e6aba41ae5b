"""How well one noisy image tells its own noise energy: the number both reference-free estimates
subtract (issue 15, `n2sr.estimate.fit`).

A strong denoiser's MSE is a few per cent of the noise energy, so an energy error of ``e`` per
cent moves its SURE estimate by about ``e / (MSE / energy)`` of that MSE: 5 % is about 1 dB at
a 12 dB gain. This script measures that energy error on every FMD and W2S image with a
reference, on the whole frame and on the 256 x 256 centre crop that `reference_free.py` scores.

Truth: the band energy (`n2sr.spectrum.band_energy`, same band and correlation fit) of the
noisy image minus its reference (W2S: the reference after the affine fit of `reference_free.py`).
That difference is the noise plus the reference's mismatch, which sits at low frequencies (the
sample's slow changes), not in the band; FMD BPAE_B also has pairs of consecutive captures,
whose difference over sqrt(2) is noise alone. Estimates, from the noisy image alone:

* ``fit``: what SURE uses, the level-set fit scaled to the band (`n2sr.estimate.fit`);
* ``scanned``: the same for a point-scanning microscope (``point_scanning``, FMD's confocal
  configurations): the band fitted with correlation along x only, its energy from the same band;
* ``level_set``: the level-set fit unscaled (`n2sr.noise.estimate_poisson_gaussian`);
* ``tile_median``: the band energy of 64 x 64 tiles over the fit's variance there, median over
  tiles, times the mean fitted variance: a texture-robust variant, tried and not adopted.

    .venv/bin/python benchmarks/noise_energy.py
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from n2sr import estimate, spectrum
from n2sr.io.images import read_image
from n2sr.noise import estimate_poisson_gaussian

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("N2SR_DATA", REPO.parent / "shared" / "data"))
SINGLE = ["Confocal_BPAE_G", "Confocal_BPAE_R", "Confocal_FISH", "Confocal_MICE"]
TILE = 64


def centre(z: np.ndarray, side: int = 256) -> np.ndarray:
    h, w = z.shape
    return z[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]


def images() -> list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(group, name, noisy, reference, next capture or None), float64."""
    fmd = DATA / "fmd"
    out = [("fmd", f"{c} fov1", read_image(fmd / c / "raw" / "1" / "capture00.png"),
            read_image(fmd / c / "gt" / "1" / "avg50.png"), None) for c in SINGLE]
    for fov in (17, 18):
        caps = sorted((fmd / "Confocal_BPAE_B" / "raw" / str(fov)).glob("*.png"))
        ref = read_image(fmd / "Confocal_BPAE_B" / "gt" / str(fov) / "avg50.png")
        out += [("fmd", f"Confocal_BPAE_B fov{fov} c{k}", read_image(caps[k]), ref, read_image(caps[k + 1]))
                for k in (0, 1)]
    w2s = DATA / "w2s_8bit"
    for p in sorted((w2s / "avg1").glob("input_avg1_*.tif")):
        ref = read_image(w2s / "avg400" / p.name.replace("input_avg1", "target_avg400")).astype(np.float64)
        noisy = read_image(p).astype(np.float64)
        a, b = np.polyfit(ref.ravel(), noisy.ravel(), 1)
        out.append(("w2s", p.stem.replace("input_avg1_", "w2s "), noisy, a * ref + b, None))
    return [(g, n, y.astype(np.float64), x.astype(np.float64), None if o is None else o.astype(np.float64))
            for g, n, y, x, o in out]


def tile_median(y: np.ndarray) -> float:
    model = estimate_poisson_gaussian(y)
    var = estimate.noise_variance(y, model)
    kernel = estimate.noise_kernel(y)
    ratios = [spectrum.band_energy(y[i:i + TILE, j:j + TILE], kernel) / var[i:i + TILE, j:j + TILE].mean()
              for i in range(0, y.shape[0] - TILE + 1, TILE) for j in range(0, y.shape[1] - TILE + 1, TILE)]
    return float(np.median(ratios) * var.mean())


def row(group: str, name: str, extent: str, y: np.ndarray, x: np.ndarray, other: np.ndarray | None) -> dict:
    diff = y - x
    truth_kernel = spectrum.band_correlation(diff)
    truth = spectrum.band_energy(diff, truth_kernel)
    kernel = estimate.noise_kernel(y)
    fitted = float(estimate.noise_variance(y, estimate.fit(y)).mean())
    scanned = float(estimate.noise_variance(y, estimate.fit(y, scanned=True)).mean())
    level_set = float(estimate.noise_variance(y, estimate_poisson_gaussian(y)).mean())
    out = {"group": group, "image": name, "extent": extent, "truth": truth,
           "truth_lag_x": truth_kernel[2, 3], "truth_lag_y": truth_kernel[3, 2],
           "est_lag_x": kernel[2, 3], "est_lag_y": kernel[3, 2],
           "fit_err": fitted / truth - 1, "scanned_err": scanned / truth - 1, "level_set_err": level_set / truth - 1,
           "tile_median_err": tile_median(y) / truth - 1}
    if other is not None:
        pair = (y - other) / np.sqrt(2.0)
        out["pair_vs_truth"] = spectrum.band_energy(pair, spectrum.band_correlation(pair)) / truth - 1
    return out


def report(frame: pd.DataFrame) -> str:
    pct = {c: (lambda v: f"{100 * v:+.1f} %") for c in ("fit_err", "scanned_err", "level_set_err", "tile_median_err",
                                                        "pair_vs_truth")}
    table = frame.copy()
    for c, f in pct.items():
        if c in table:
            table[c] = table[c].map(lambda v, f=f: "" if pd.isna(v) else f(v))
    for c in ("truth_lag_x", "truth_lag_y", "est_lag_x", "est_lag_y", "truth"):
        table[c] = table[c].map(lambda v: f"{v:.2f}")
    lines = ["# Noise energy from one image against the truth (issue 15)", "",
             "`benchmarks/noise_energy.py`; see its docstring for the truth and the estimates. Error = "
             "estimate / truth - 1; lags: the band fit's neighbour correlation along x and y, of the "
             "noisy image (est) and of noisy minus reference (truth). `pair_vs_truth`: FMD BPAE_B's "
             "capture-pair energy against the truth (how well the truth itself holds).", "",
             table.to_markdown(index=False), "", "| group | extent | n | fit: median abs err | scanned | level_set | tile_median |",
             "|---|---|---|---|---|---|---|"]
    for (group, extent), g in frame.groupby(["group", "extent"]):
        lines.append(f"| {group} | {extent} | {len(g)} | " + " | ".join(
            f"{100 * g[c].abs().median():.1f} %" for c in ("fit_err", "scanned_err", "level_set_err", "tile_median_err")) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "noise_energy"))
    a = p.parse_args()
    rows = []
    for group, name, y, x, other in images():
        rows.append(row(group, name, "frame", y, x, other))
        rows.append(row(group, name, "crop 256", centre(y), centre(x), None if other is None else centre(other)))
        print(rows[-2]["image"], f"{rows[-2]['fit_err']:+.3f} {rows[-1]['fit_err']:+.3f}", flush=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(f"{a.out}.csv", index=False)
    Path(f"{a.out}.md").write_text(report(frame))


if __name__ == "__main__":
    main()
