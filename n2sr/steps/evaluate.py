"""Step `evaluate`: PSNR/SSIM (both conventions) of every selected plane of images against a reference."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from n2sr.errors import InputError
from n2sr.io import parts
from n2sr.io.csvs import write_image_csv
from n2sr.io.planes import capture_ids, load_planes, select
from n2sr.tables import evaluate_images


def evaluate(reference: str | os.PathLike[str], images: Sequence[str | os.PathLike[str]], *,
             csv: str | os.PathLike[str] | None = None, data_range: float | None = None,
             bits: int | None = None, captures: Sequence[int] | None = None, labels: dict[str, str] | None = None,
             methods: Sequence[str] = (), part: str | None = None) -> list[dict]:
    """One row per plane; `methods` names each image's method (default: its file stem).

    `part` scatters a huge stack over K jobs (`n2sr.io.parts`): ``k/K`` scores run k of the
    captures of every image into a part CSV beside `csv`, ``gather/K`` concatenates the parts
    into `csv` (and returns no rows); the rows are those of one job.

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
    ref = load_planes(reference)
    if ref.shape[0] != 1:
        raise InputError(reference, f"has {ref.shape[0]} planes; a reference must be a single plane")
    rows = []
    for i, path in enumerate(images):
        path = Path(path)
        selection = select(path, captures)
        n = selection.shape[0]
        start, stop = (0, n) if stage is None else parts.split(n, stage.count)[stage.index - 1]
        stack = np.stack([selection[i, ...] for i in range(start, stop)])
        stack = stack.reshape(-1, *stack.shape[-2:])
        if stack.shape[-2:] != ref.shape[-2:]:
            raise InputError(path, f"planes are {stack.shape[-2]}x{stack.shape[-1]} but the reference "
                                   f"{reference} is {ref.shape[-2]}x{ref.shape[-1]}")
        method = methods[i] if methods else path.name.split(".")[0]
        ids = selection.captures if captures is not None else capture_ids(path, n * stack.shape[0] // (stop - start))
        ids = ids[start * len(ids) // n:stop * len(ids) // n]  # this part's (all without a part)
        planes = {f"{path.name}[{t}]": plane for t, plane in zip(ids, stack)}
        try:
            rows += evaluate_images(ref[0], planes, fixed_data_range=data_range, bits=bits,
                                    labels={"configuration": "", **(labels or {}), "method": method})
        except InputError:
            raise
        except ValueError as exc:  # e.g. a constant reference, or a float one without a data range
            hint = ("; in the pipeline, set evaluate.data_range" if "no fixed data range" in str(exc) else
                    "; in the pipeline, set evaluate.bits or evaluate.data_range" if "explicitly" in str(exc) else "")
            raise InputError(reference, f"{exc} (scoring {path}){hint}") from exc
    if csv is not None:
        write_image_csv(rows, csv if stage is None else parts.marker(csv, stage.index, stage.count, ".csv"))
    return rows
