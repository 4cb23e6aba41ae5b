"""Evaluation reports: per-image PSNR/SSIM rows, summaries and a Table-2-shaped pivot.

The pipeline writes one per-image CSV per (method, configuration, FOV) and `summarize`
folds any number of them into ``summary.csv`` (all configurations),
``<configuration>_summary.csv`` (one each), ``table.csv`` and ``table_fixed.csv``
(configuration x method, cells "PSNR/SSIM" means like Table 2 of the Noise2SR paper, with the
number of test images ``n``). Every row carries both metric conventions (see `n2sr.metrics`):
``table.csv`` shows the authors' per-image one, ``table_fixed.csv`` the fixed data range.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from n2sr import io
from n2sr.metrics import evaluate_pair

METRICS = ("psnr", "ssim", "psnr_per_image", "ssim_per_image")
LABELS = ("configuration", "image", "method")
IMAGE_COLUMNS = (*LABELS, *METRICS, "data_range", "data_range_per_image")
NOISY = "noisy"  # method name of the unprocessed input: the baseline row of every table


def evaluate_images(
    reference: np.ndarray,
    images: Mapping[str, np.ndarray],
    *,
    fixed_data_range: float | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[dict]:
    """PSNR/SSIM of every plane of every image against the reference, both conventions.

    Parameters
    ----------
    reference : ndarray (Y, X) or (..., Y, X) holding one plane or one per image plane
        A multi-plane reference is matched plane by plane (after flattening the leading
        axes), a single plane is compared with every plane.
    images : mapping label -> ndarray (Y, X) or (..., Y, X)
        The label becomes the ``image`` column; planes of a stack are ``label[i]``, ``i``
        the flat index over the leading axes (``t`` captures for a pipeline Zarr).
    fixed_data_range : float, optional
        Data range of the ``fixed`` convention; default: the reference dtype's full scale.
    labels : mapping, optional
        Columns copied into every row, e.g. ``{"configuration": "A", "method": "n2sr"}``;
        use method ``"noisy"`` for the unprocessed input.

    Returns
    -------
    list of dict
        One row per plane: the labels, ``image``, and the keys of `metrics.evaluate_pair`.
    """
    labels = dict(labels or {})
    clash = sorted(set(labels) & (set(IMAGE_COLUMNS) - {"configuration", "method"}))
    if clash:
        raise ValueError(f"labels {clash} would overwrite computed columns; rename them")
    reference = np.asarray(reference)
    refs = reference.reshape(-1, *reference.shape[-2:])
    rows = []
    for name, image in images.items():
        image = np.asarray(image)
        if image.shape[-2:] != reference.shape[-2:]:
            raise ValueError(f"{name}: image shape {image.shape} and reference shape {reference.shape} "
                             "have different planes (last two axes)")
        planes = image.reshape(-1, *image.shape[-2:])
        if len(refs) not in (1, len(planes)):
            raise ValueError(f"{name}: {len(planes)} image plane(s) but {len(refs)} reference planes; "
                             "give one reference plane or one per image plane")
        for i, plane in enumerate(planes):
            ref = refs[0] if len(refs) == 1 else refs[i]
            label = name if image.ndim == 2 else f"{name}[{i}]"
            rows.append({**labels, "image": label, **evaluate_pair(ref, plane, fixed_data_range=fixed_data_range)})
    return rows


def write_image_csv(rows: Sequence[Mapping[str, object]], path: str | os.PathLike[str]) -> Path:
    """Write per-image rows atomically, standard columns first, extra label columns after.

    ``configuration`` and ``method`` must be present (as `labels` of `evaluate_images`):
    without them `summarize` could not group the rows.
    """
    frame = pd.DataFrame(list(rows), columns=None if rows else list(IMAGE_COLUMNS))
    missing = [c for c in IMAGE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: rows lack columns {missing}; pass labels={{'configuration': ..., "
                         "'method': ...}} to evaluate_images")
    extra = [c for c in frame.columns if c not in IMAGE_COLUMNS]
    return _write_csv(frame[[*IMAGE_COLUMNS, *extra]], path)


def read_image_csvs(paths: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """Concatenate per-image CSVs, refusing any that lacks a column the summary needs."""
    frames = []
    for path in paths:
        # Labels stay text ("NA" is a fine configuration name); only metric cells may be missing.
        frame = pd.read_csv(io.check_exists(path), dtype={c: str for c in LABELS}, keep_default_na=False,
                            na_values={c: ["", "nan", "NaN"] for c in METRICS})
        missing = [c for c in (*LABELS, *METRICS) if c not in frame.columns]
        if missing:
            raise io.InputError(path, f"missing columns {missing}; expected a per-image CSV from `n2sr evaluate`")
        blank = [c for c in LABELS if (frame[c] == "").any()]
        if blank:
            raise io.InputError(path, f"empty values in columns {blank}; every row needs a configuration, image "
                                      "and method")
        frames.append(frame)
    if not frames:
        raise ValueError("no per-image CSVs given to summarize")
    return pd.concat(frames, ignore_index=True)


def summary_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for n=1) and n per configuration x method.

    Groups keep their order of first appearance, with ``noisy`` first within each
    configuration, so the baseline reads first.
    """
    grouped = per_image.groupby(["configuration", "method"], sort=False)[list(METRICS)]
    stats = grouped.agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats.insert(0, "n", grouped.size())
    stats = stats.reset_index()
    configs = list(dict.fromkeys(stats["configuration"]))
    order = stats["configuration"].map(configs.index) * 2 + (stats["method"] != NOISY)
    return stats.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)


def pivot_table(summary: pd.DataFrame, convention: Literal["fixed", "per_image"] = "per_image") -> pd.DataFrame:
    """Table 2 of the paper: rows configuration, columns method, cells "PSNR/SSIM" means.

    Defaults to the authors' ``per_image`` convention so the numbers compare with the paper;
    a ``convention`` column records which one it is. Column ``n`` is the number of test
    images a mean is over; where methods of a configuration were scored on different
    numbers, each cell carries its own ``(n=k)`` instead, so no mean is misread.
    """
    if convention not in ("fixed", "per_image"):
        raise ValueError(f"convention must be 'fixed' or 'per_image'; got {convention!r}")
    suffix = "" if convention == "fixed" else "_per_image"
    uniform = summary.groupby("configuration", sort=False)["n"].transform("nunique") == 1
    cells = summary.assign(
        cell=[f"{p:.2f}/{s:.4f}" + ("" if same else f" (n={n})") for p, s, n, same in
              zip(summary[f"psnr{suffix}_mean"], summary[f"ssim{suffix}_mean"], summary["n"], uniform)]
    )
    table = cells.pivot(index="configuration", columns="method", values="cell")
    configs = list(dict.fromkeys(summary["configuration"]))
    table = table.reindex(index=configs, columns=list(dict.fromkeys(summary["method"]))).fillna("")
    table.columns.name = None
    counts = summary.groupby("configuration", sort=False)["n"].agg(lambda n: str(n.iloc[0]) if n.nunique() == 1 else "")
    table.insert(0, "n", counts.reindex(configs))
    table.insert(0, "convention", convention)
    return table.reset_index()


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
        _write_csv(part, out_dir / f"{configuration}_summary.csv")
    _write_csv(summary, out_dir / "summary.csv")
    _write_csv(pivot_table(summary, "per_image"), out_dir / "table.csv")
    _write_csv(pivot_table(summary, "fixed"), out_dir / "table_fixed.csv")
    return summary


def _write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Atomic CSV write, so a killed job never leaves a truncated table behind."""
    with io.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)
