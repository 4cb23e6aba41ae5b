"""Step `evaluate`: PSNR/SSIM (both conventions) of every selected plane of images against a reference,
and the reference-free estimates of each plane (`n2sr.estimate`), with or without a reference.

The estimates of a denoised image come from its attributes (``estimates``, one entry per plane,
written by the `denoise` and `bm3d` steps, which had the network or BM3D at hand); the residual
check needs the noisy input too (`noisy`). The noisy input's own rows (method ``noisy``) get the
noise energy as their SURE. Nothing here imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from n2sr import estimate
from n2sr.config import DenoiseConfig
from n2sr.errors import InputError
from n2sr.io import parts
from n2sr.io.csvs import write_image_csv
from n2sr.io.images import kind_of
from n2sr.io.omezarr import read_attrs
from n2sr.io.planes import capture_ids, load_planes, select
from n2sr.metrics import bits_range, fixed_range
from n2sr.steps.reference import no_reference
from n2sr.tables import NO_REFERENCE, NOISY, evaluate_images, unscored_rows


def evaluate(reference: str | os.PathLike[str], images: Sequence[str | os.PathLike[str]], *,
             csv: str | os.PathLike[str] | None = None, data_range: float | None = None,
             bits: int | None = None, captures: Sequence[int] | None = None, labels: dict[str, str] | None = None,
             methods: Sequence[str] = (), part: str | None = None,
             noisy: str | os.PathLike[str] | None = None,
             estimate_pixels: int = DenoiseConfig.estimate_pixels, scanned: bool = False) -> list[dict]:
    """One row per plane; `methods` names each image's method (default: its file stem).

    `reference` may be a no-reference marker (`n2sr.steps.reference.write_none`): then no PSNR/SSIM
    is computed, the ``no_reference`` column says why, and the estimates are read in the fixed
    range of `data_range`, `bits` or the noisy data's dtype. `noisy` is the noisy input the
    images were denoised from (its captures as each image records them), for the residual check.

    `part` scatters a huge stack over K jobs (`n2sr.io.parts`): ``k/K`` scores run k of the
    captures of every image into a part CSV beside `csv`, ``gather/K`` concatenates the parts
    into `csv` (and returns no rows); the rows are those of one job.

    `estimate_pixels`: as `denoise.estimate_pixels`; the reference-free columns of a larger plane
    (noise fit, residual check) are measured on its crops (`n2sr.estimate.columns`). `scanned`:
    the data come from a point-scanning microscope (as the denoising step was told).

    The fixed-range scores use `data_range`, else `bits` (range ``2**bits - 1``), else the
    reference dtype's full scale where the data can fill it (`n2sr.metrics.fixed_range`); the
    CSV's ``data_range_source`` column says which.
    """
    if data_range is not None and bits is not None:
        raise ValueError("give --data-range or --bits, not both (evaluate.data_range or evaluate.bits in the config)")
    if methods and len(methods) != len(images):
        raise ValueError(f"{len(methods)} --method value(s) for {len(images)} image(s); give one per image or none")
    stage = parts.parse(part) if part is not None else None
    if stage is not None and (csv is None or stage.kind == "prepare"):
        raise ValueError(f"--part {part}: evaluate has stages k/K and gather/K, both with --csv")
    if stage is not None and stage.kind == "gather":
        parts.concatenate(csv, stage.count)
        return []
    reason = no_reference(reference)
    ref = load_planes(reference) if reason is None else None
    if ref is not None and ref.shape[0] != 1:
        raise InputError(reference, f"has {ref.shape[0]} planes; a reference must be a single plane")
    rows = []
    for i, path in enumerate(images):
        path = Path(path)
        selection = select(path, captures)
        n = selection.shape[0]
        start, stop = (0, n) if stage is None else parts.split(n, stage.count)[stage.index - 1]
        stack = np.stack([selection[i, ...] for i in range(start, stop)])
        stack = stack.reshape(-1, *stack.shape[-2:])
        if ref is not None and stack.shape[-2:] != ref.shape[-2:]:
            raise InputError(path, f"planes are {stack.shape[-2]}x{stack.shape[-1]} but the reference "
                                   f"{reference} is {ref.shape[-2]}x{ref.shape[-1]}")
        method = methods[i] if methods else path.name.split(".")[0]
        ids = selection.captures if captures is not None else capture_ids(path, n * stack.shape[0] // (stop - start))
        ids = ids[start * len(ids) // n:stop * len(ids) // n]  # this part's (all without a part)
        planes = {f"{path.name}[{t}]": plane for t, plane in zip(ids, stack)}
        row_labels = {"configuration": "", **(labels or {}), "method": method}
        source = None if method == NOISY or noisy is None else _noisy_source(noisy, path)
        if ref is None:
            fixed, range_source = _range(data_range, bits, source.dtype if source is not None else stack.dtype)
            new = unscored_rows(list(planes), data_range=fixed, source=range_source, reason=reason, labels=row_labels)
        else:
            try:
                new = evaluate_images(ref[0], planes, fixed_data_range=data_range, bits=bits, labels=row_labels)
            except InputError:
                raise
            except ValueError as exc:  # e.g. a constant reference, or a float one without a data range
                hint = ("; in the pipeline, set evaluate.data_range" if "no fixed data range" in str(exc) else
                        "; in the pipeline, set evaluate.bits or evaluate.data_range" if "explicitly" in str(exc)
                        else "")
                raise InputError(reference, f"{exc} (scoring {path}){hint}") from exc
            for row in new:
                row[NO_REFERENCE] = ""
        entries = _entries(path) if method != NOISY else []
        per = int(np.prod(selection.shape[1:-2]))  # planes per capture
        for k, (row, plane) in enumerate(zip(new, stack)):
            j, inner = start + k // per, np.unravel_index(k % per, selection.shape[1:-2])
            g = selection.captures[j] * per + k % per  # the plane's flat index in the image
            y = plane if method == NOISY else None if source is None else source[(selection.captures[j], *inner)]
            entry = entries[g] if g < len(entries) else None
            row.update(estimate.columns(y, plane, entry, row["data_range"], identity=method == NOISY,
                                        pixels=estimate_pixels, scanned=scanned))
        rows += new
    if csv is not None:
        write_image_csv(rows, csv if stage is None else parts.marker(csv, stage.index, stage.count, ".csv"))
    return rows


def _entries(path: Path) -> list[dict]:
    """The per-plane estimates a denoising step stored in a Zarr output (none for other files)."""
    return list(read_attrs(path).get("estimates") or []) if kind_of(path) == "zarr" else []


def _noisy_source(noisy: str | os.PathLike[str], image: Path):
    """The noisy captures `image` was denoised from, on the image's t axis (as it records them)."""
    recorded = read_attrs(image).get("captures") if kind_of(image) == "zarr" else None
    return select(noisy, recorded)


def _range(data_range: float | None, bits: int | None, dtype: np.dtype) -> tuple[float, str]:
    """The fixed data range without a reference: given, from the bit depth, or the noisy data's
    dtype (NaN, and no estimated PSNR, for float data without a given range)."""
    if data_range is not None:
        return float(data_range), "data_range"
    if bits is not None:
        return bits_range(bits), "bits"
    try:
        return fixed_range(dtype), "dtype"
    except ValueError:
        return float("nan"), ""
