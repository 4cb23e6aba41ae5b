"""CSV tables on disk: per-image metric rows and summaries, written atomically."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from n2sr.errors import InputError
from n2sr.io.atomic import atomic_path
from n2sr.io.images import check_exists
from n2sr.estimate import COLUMNS as ESTIMATE_COLUMNS
from n2sr.tables import IMAGE_COLUMNS, LABELS, METRICS, NO_REFERENCE, RANGE_SOURCE


def read_image_csvs(paths: Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """Concatenate per-image CSVs, refusing any that lacks a column the summary needs."""
    frames = []
    for path in paths:
        # Labels stay text ("NA" is a fine configuration name); only metric cells may be missing.
        texts = (*LABELS, NO_REFERENCE, "held_out_kind", "residual_flag")
        numbers = [c for c in (*METRICS, *ESTIMATE_COLUMNS) if c not in texts]
        frame = pd.read_csv(check_exists(path), dtype={c: str for c in texts}, keep_default_na=False,
                            na_values={c: ["", "nan", "NaN"] for c in numbers})
        missing = [c for c in (*LABELS, *METRICS) if c not in frame.columns]
        if missing:
            raise InputError(path, f"missing columns {missing}; expected a per-image CSV from `n2sr evaluate`")
        blank = [c for c in LABELS if (frame[c] == "").any()]
        if blank:
            raise InputError(path, f"empty values in columns {blank}; every row needs a configuration, image "
                                      "and method")
        frames.append(frame)
    if not frames:
        raise ValueError("no per-image CSVs given to summarize")
    return pd.concat(frames, ignore_index=True)


def write_image_csv(rows: Sequence[Mapping[str, object]], path: str | os.PathLike[str]) -> Path:
    """Write per-image rows atomically, standard columns first (then ``data_range_source``), extra
    label columns after.

    ``configuration`` and ``method`` must be present (as `labels` of `evaluate_images`):
    without them `summarize` could not group the rows.
    """
    frame = pd.DataFrame(list(rows), columns=None if rows else list(IMAGE_COLUMNS))
    missing = [c for c in IMAGE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: rows lack columns {missing}; pass labels={{'configuration': ..., "
                         "'method': ...}} to evaluate_images")
    source = [RANGE_SOURCE] if RANGE_SOURCE in frame.columns else []
    extra = [c for c in frame.columns if c not in (*IMAGE_COLUMNS, *source)]
    return write_csv(frame[[*IMAGE_COLUMNS, *source, *extra]], path)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Atomic CSV write, so a killed job never leaves a truncated table behind."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)
