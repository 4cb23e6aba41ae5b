"""Step `summarize`: per-image CSVs -> ``summary.csv``, ``<configuration>_summary.csv``,
``table.csv`` (per-image convention, the paper's) and ``table_fixed.csv`` (fixed data range)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from n2sr.io.csvs import read_image_csvs, write_csv
from n2sr.tables import pivot_table, summary_table


def summarize(
    per_image_csvs: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
) -> pd.DataFrame:
    """Write ``summary.csv``, ``<configuration>_summary.csv``, ``table.csv`` (per-image convention)
    and ``table_fixed.csv`` (fixed data range) into `out_dir`.

    Returns the overall summary (what ``summary.csv`` holds).
    """
    out_dir = Path(out_dir)
    summary = summary_table(read_image_csvs(per_image_csvs))
    bad = [c for c in summary["configuration"].unique() if c != Path(c).name or c.startswith(".")]
    if bad:
        raise ValueError(f"configurations {bad} cannot name a file (<configuration>_summary.csv); use plain names")
    for configuration, part in summary.groupby("configuration", sort=False):
        write_csv(part, out_dir / f"{configuration}_summary.csv")
    write_csv(summary, out_dir / "summary.csv")
    write_csv(pivot_table(summary, "per_image"), out_dir / "table.csv")
    write_csv(pivot_table(summary, "fixed"), out_dir / "table_fixed.csv")
    return summary
