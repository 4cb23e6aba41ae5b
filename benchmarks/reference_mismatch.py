"""How far FMD's avg50 reference is from the clean image of one capture: the ceiling it puts on
any denoiser's PSNR (issues 13 and 15).

The 50 captures of a field of view are taken one after the other, and the sample changes while
they are taken (bleaching, drift): capture ``k`` has clean image ``x_k``, and avg50 is
``mean_k x_k`` plus 1/50 of the noise. A perfect denoiser of capture ``c`` returns ``x_c``,
which scores ``MSE = m_c + v / 50`` against avg50, with the mismatch ``m_c = ||x_c - mean x||^2``
per pixel. Measured without a model of the sample:

* ``v``, the noise variance: ``mean (c_k - c_{k+1})^2 / 2`` over consecutive captures 0-4 (their
  clean images differ least; any change between them makes ``v`` read high and ``m`` low, so the
  ceilings below are upper bounds).
* ``m_c = mean (c - avg50)^2 - (1 - 1/50) v`` (capture ``c`` is one of the 50 averaged).

Also the PSNR of the mean of captures 0-4 (a denoiser with no training, noise ``v / 5``) against
avg50, and, on FOV 1 (all 50 captures here), the mismatch of every capture against its index.
PSNR conventions as in `quality_budget.py`: range 255 and the reference's own range (max - min).

    .venv/bin/python benchmarks/reference_mismatch.py
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from n2sr.io.images import read_image

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("N2SR_DATA", REPO.parent / "shared" / "data"))
CONFIG = "Confocal_BPAE_B"


def psnr(mse: float, data_range: float) -> float:
    return 10.0 * math.log10(data_range**2 / mse) if mse > 0 else math.inf


def captures(fov: int) -> list[np.ndarray]:
    return [read_image(p).astype(np.float64) for p in sorted((DATA / "fmd" / CONFIG / "raw" / str(fov)).glob("*.png"))]


def fov_rows(fov: int, scored: int) -> list[dict]:
    caps = captures(fov)
    ref = read_image(DATA / "fmd" / CONFIG / "gt" / str(fov) / "avg50.png").astype(np.float64)
    v = float(np.mean([np.mean((caps[k] - caps[k + 1]) ** 2) / 2 for k in range(4)]))
    span = float(ref.max() - ref.min())
    mean5 = float(np.mean((np.mean(caps[:5], axis=0) - ref) ** 2))
    rows = []
    for c in range(scored):
        m = float(np.mean((caps[c] - ref) ** 2)) - (1 - 1 / 50) * v
        floor = m + v / 50
        rows.append({"fov": fov, "capture": c, "noise_var": v, "mismatch": m, "mismatch_share": m / v,
                     "ceiling_psnr": psnr(floor, 255.0), "ceiling_psnr_per_image": psnr(floor, span),
                     "noisy_psnr_per_image": psnr(float(np.mean((caps[c] - ref) ** 2)), span),
                     "mean5_psnr_per_image": psnr(mean5, span)})
    return rows


def over_time() -> list[tuple[int, float]]:
    """FOV 1: each capture's mismatch against its index (v from consecutive pairs near it)."""
    caps = captures(1)
    ref = np.mean(caps, axis=0)  # the exact mean (avg50 is it rounded)
    out = []
    for k in range(0, len(caps), 7):
        near = range(max(0, k - 2), min(len(caps) - 1, k + 2))
        v = float(np.mean([np.mean((caps[j] - caps[j + 1]) ** 2) / 2 for j in near]))
        out.append((k, (float(np.mean((caps[k] - ref) ** 2)) - (1 - 1 / len(caps)) * v) / v))
    return out


def report(frame: pd.DataFrame, trend: list[tuple[int, float]], budget: Path | None) -> str:
    lines = ["# FMD's avg50 against one capture's clean image: the ceiling on PSNR (`benchmarks/reference_mismatch.py`)",
             "", f"{CONFIG}, captures 0-{frame['capture'].max()} of each FOV (the ones `quality_budget.py` scores "
             "on FOVs 17-18). Mismatch = mean squared difference between the capture's clean image and avg50's "
             "(share of the noise variance); ceiling = the PSNR against avg50 of a perfect denoiser of the "
             "capture (an upper bound, see the script); mean 0-4 = the PSNR of the plain mean of captures 0-4.", "",
             "| FOV | noise var | mismatch (share of noise) | ceiling PSNR, range 255 | ceiling PSNR, per-image range "
             "| noisy, per-image | mean 0-4, per-image |", "|---|---|---|---|---|---|---|"]
    for fov, part in frame.groupby("fov"):
        lines.append(f"| {fov} | {part['noise_var'].iloc[0]:.1f} | {part['mismatch'].mean():.2f} "
                     f"({100 * part['mismatch_share'].mean():.0f} %) | {part['ceiling_psnr'].mean():.2f} | "
                     f"{part['ceiling_psnr_per_image'].mean():.2f} | {part['noisy_psnr_per_image'].mean():.2f} | "
                     f"{part['mean5_psnr_per_image'].iloc[0]:.2f} |")
    held = frame[frame["fov"].isin([17, 18])]
    lines += ["", f"**FOVs 17-18 (issue 13's BPAE target, 38.0 dB per-image range):** the ceiling averages "
              f"{held['ceiling_psnr_per_image'].mean():.2f} dB (FOV 17: "
              f"{held[held['fov'] == 17]['ceiling_psnr_per_image'].mean():.2f}, FOV 18: "
              f"{held[held['fov'] == 18]['ceiling_psnr_per_image'].mean():.2f}).", ""]
    if budget is not None and budget.exists():
        q = pd.read_csv(budget)
        q = q[(q["configuration"] == CONFIG)].copy()
        q["fov"] = q["image"].str.split("/").str[0].astype(int)
        lines += ["Measured in `quality_budget.csv` on the same captures (per-image range, mean per FOV):", "",
                  "| method | FOV 17 | FOV 18 | mean |", "|---|---|---|---|"]
        for (method, minutes), part in q.groupby(["method", "minutes"], dropna=False):
            by = part.groupby("fov")["psnr_per_image"].mean()
            label = method if isinstance(minutes, float) and math.isnan(minutes) else f"{method} {minutes:g} min"
            lines.append(f"| {label} | {by.get(17, math.nan):.2f} | {by.get(18, math.nan):.2f} | "
                         f"{part['psnr_per_image'].mean():.2f} |")
        lines.append(f"| ceiling (perfect denoiser) | {held[held['fov'] == 17]['ceiling_psnr_per_image'].mean():.2f} | "
                     f"{held[held['fov'] == 18]['ceiling_psnr_per_image'].mean():.2f} | "
                     f"{held['ceiling_psnr_per_image'].mean():.2f} |")
        lines.append("")
    lines += ["FOV 1 (50 captures): mismatch of capture k against the exact mean of all 50, as a share of "
              "the noise variance:", "", "| capture | " + " | ".join(str(k) for k, _ in trend) + " |",
              "|---|" + "---|" * len(trend), "| mismatch | " + " | ".join(f"{100 * s:.0f} %" for _, s in trend) + " |", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scored", type=int, default=3, help="captures per FOV (quality_budget.py scores 3)")
    p.add_argument("--budget", type=Path, default=REPO / "benchmarks" / "results" / "quality_budget.csv")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "reference_mismatch"))
    args = p.parse_args()
    frame = pd.DataFrame([r for fov in range(1, 19) for r in fov_rows(fov, args.scored)])
    frame.to_csv(f"{args.out}.csv", index=False)
    text = report(frame, over_time(), args.budget)
    Path(f"{args.out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
