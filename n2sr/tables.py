"""Per-image PSNR/SSIM rows, summaries and a Table-2-shaped pivot (pandas, no files).

Every row carries both metric conventions (see `n2sr.metrics`). ``summary_table`` folds rows into
mean, std and n per configuration x method; ``pivot_table`` lays them out like Table 2 of the
Noise2SR paper (configuration x method, cells "PSNR/SSIM"), in the authors' per-image
convention or with the fixed data range.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd

from n2sr.metrics import evaluate_pair

METRICS = ("psnr", "ssim", "psnr_per_image", "ssim_per_image")
LABELS = ("configuration", "image", "method")
IMAGE_COLUMNS = (*LABELS, *METRICS, "data_range", "data_range_per_image")
# Where the fixed data range came from: "dtype" (the reference's full scale), "bits" or "data_range"
# (given); written after IMAGE_COLUMNS when present (CSVs from before it lack it).
RANGE_SOURCE = "data_range_source"
NO_REFERENCE = "no_reference"  # why a row has no PSNR/SSIM (empty where a reference exists)
# Reference-free PSNR estimates summarised beside the true ones (`n2sr.estimate.COLUMNS`).
ESTIMATES = ("est_psnr_sure", "est_psnr_held_out")
NOISY = "noisy"  # method name of the unprocessed input: the baseline row of every table


def evaluate_images(
    reference: np.ndarray,
    images: Mapping[str, np.ndarray],
    *,
    fixed_data_range: float | None = None,
    bits: int | None = None,
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
        Data range of the ``fixed`` convention; default: the reference dtype's full scale,
        where the data can fill it (`n2sr.metrics.fixed_range`).
    bits : int, optional
        Bit depth of the data instead of `fixed_data_range` (range ``2**bits - 1``).
    labels : mapping, optional
        Columns copied into every row, e.g. ``{"configuration": "A", "method": "n2sr"}``;
        use method ``"noisy"`` for the unprocessed input.

    Returns
    -------
    list of dict
        One row per plane: the labels, ``image``, and the keys of `metrics.evaluate_pair`.
    """
    labels = dict(labels or {})
    clash = sorted(set(labels) & ({*IMAGE_COLUMNS, RANGE_SOURCE} - {"configuration", "method"}))
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
            rows.append({**labels, "image": label, **evaluate_pair(ref, plane, fixed_data_range=fixed_data_range,
                                                                      bits=bits)})
    return rows


def unscored_rows(names: list[str], *, data_range: float, source: str, reason: str,
                  labels: Mapping[str, str] | None = None) -> list[dict]:
    """Rows of planes without a reference: no PSNR/SSIM (NaN), `reason` in ``no_reference``, and
    the fixed `data_range` the reference-free estimates are read in (`source`: where it came from)."""
    return [{**(labels or {}), "image": name, **dict.fromkeys(METRICS, np.nan), "data_range": data_range,
             "data_range_per_image": np.nan, RANGE_SOURCE: source, NO_REFERENCE: reason} for name in names]


def summary_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for n=1) and n per configuration x method, of the true
    scores and (where the rows have them) of the estimated PSNRs, NaN skipped. An estimated PSNR of
    +inf (MSE estimate <= 0) is left out of its mean and std and counted in ``<estimate>_n_inf``.

    Groups keep their order of first appearance, with ``noisy`` first within each
    configuration, so the baseline reads first.
    """
    estimates = [c for c in ESTIMATES if c in per_image.columns]
    keys = [per_image["configuration"], per_image["method"]]
    # An estimated MSE <= 0 reads as +inf dB; it is counted, not averaged (one would make the mean inf).
    unbounded = {c: np.isposinf(per_image[c].astype(float)) for c in estimates}
    frame = per_image.assign(**{c: per_image[c].astype(float).mask(unbounded[c]) for c in estimates})
    grouped = frame.groupby(["configuration", "method"], sort=False)[[*METRICS, *estimates]]
    stats = grouped.agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats.insert(0, "n", grouped.size())
    for c in estimates:
        stats.insert(stats.columns.get_loc(f"{c}_std") + 1, f"{c}_n_inf",
                     unbounded[c].groupby(keys, sort=False).sum().astype(int))
    if NO_REFERENCE in per_image.columns:  # why a group's true scores are missing, where they are
        reasons = per_image[NO_REFERENCE].fillna("").astype(str)
        stats[NO_REFERENCE] = reasons.groupby(keys, sort=False).agg(
            lambda r: "; ".join(dict.fromkeys(x for x in r if x)))
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
