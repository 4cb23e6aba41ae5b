"""Step `summarize`: per-image CSVs -> ``summary.csv``, ``<configuration>_summary.csv``,
``table.csv`` (per-image convention, the paper's), ``table_fixed.csv`` (fixed data range) and
``estimates/<configuration>.png`` (reference-free estimated against true PSNR, per image)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from n2sr.io.atomic import atomic_path
from n2sr.io.csvs import read_image_csvs, write_csv
from n2sr.tables import pivot_table, summary_table


def summarize(
    per_image_csvs: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
) -> pd.DataFrame:
    """Write ``summary.csv``, ``<configuration>_summary.csv``, ``table.csv`` (per-image convention),
    ``table_fixed.csv`` (fixed data range) and ``estimates/<configuration>.png`` into `out_dir`.

    Returns the overall summary (what ``summary.csv`` holds).
    """
    out_dir = Path(out_dir)
    per_image = read_image_csvs(per_image_csvs)
    summary = summary_table(per_image)
    bad = [c for c in summary["configuration"].unique() if c != Path(c).name or c.startswith(".")]
    if bad:
        raise ValueError(f"configurations {bad} cannot name a file (<configuration>_summary.csv); use plain names")
    for configuration, part in summary.groupby("configuration", sort=False):
        write_csv(part, out_dir / f"{configuration}_summary.csv")
    write_csv(summary, out_dir / "summary.csv")
    write_csv(pivot_table(summary, "per_image"), out_dir / "table.csv")
    write_csv(pivot_table(summary, "fixed"), out_dir / "table_fixed.csv")
    for configuration, part in per_image.groupby("configuration", sort=False):
        estimates_figure(part, out_dir / "estimates" / f"{configuration}.png", title=str(configuration))
    return summary


def estimates_figure(per_image: pd.DataFrame, out: str | os.PathLike[str], title: str = "") -> None:
    """Estimated against true PSNR of every image and method, one panel per estimator, with the
    95 % intervals; without a true PSNR (no reference) the estimates are drawn against the image
    index instead. A CSV from before the estimates gives an empty panel that says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4), squeeze=False)
    for ax, name in zip(axes[0], ("sure", "held_out")):
        column = f"est_psnr_{name}"
        ax.set_title(f"{title}: {name.replace('_', '-')}", fontsize=9)
        if column not in per_image.columns or per_image[column].isna().all():
            ax.text(0.5, 0.5, "no estimate", ha="center", va="center", transform=ax.transAxes)
            continue
        scored = per_image["psnr"].notna().any()
        for method, part in per_image.groupby("method", sort=False):
            part = part[part[column].notna()]
            x = part["psnr"] if scored else pd.Series(range(len(part)), index=part.index)
            est, lo, hi = part[column], part[f"{column}_lo"], part[f"{column}_hi"]
            ax.errorbar(x, est, yerr=[(est - lo).clip(lower=0), (hi - est).clip(lower=0)], fmt="o", ms=4,
                        capsize=2, label=method)
        if scored:
            both = pd.concat([per_image["psnr"], per_image[column]]).replace([float("inf")], float("nan")).dropna()
            lims = [both.min() - 1, both.max() + 1]
            ax.plot(lims, lims, "k-", lw=0.8)
            ax.fill_between(lims, [v - 1 for v in lims], [v + 1 for v in lims], color="0.9", zorder=0)
        ax.set_xlabel("true PSNR (dB)" if scored else "image (no reference)")
        ax.set_ylabel("estimated PSNR (dB)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
