"""The sample table: one row per (configuration, field of view) the pipeline works on.

Rows come from a TSV sheet (config key ``samples``), are discovered in an FMD-style
archive (``archive``: ``<root>/<configuration>/raw/<fov>/``), or follow from the noisy copies
of references the pipeline generates (``synthetic.references``). They are checked here, once,
when Snakemake reads the workflow, so a wrong row stops the run at start with its line and
problem named, rather than one job failing hours into a cluster run.

Columns
-------
configuration : imaging configuration; one model is trained per configuration
fov : field of view, unique within its configuration
raw : noisy captures of the FOV: a stack file or a folder of planes (a capture series)
reference : a given clean reference file, or "" to average the raw captures
reference_policy : auto, average, file or none (`n2sr.config.REFERENCE_POLICIES`); empty: the
    config's ``reference_policy``. A row's value after `sample_table` is never empty.
split : ``train`` (training only), ``test`` (denoised and scored) or ``both``
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd

COLUMNS = ("configuration", "fov", "raw", "reference", "reference_policy", "split")
TRAIN_SPLITS = ("train", "both")
TEST_SPLITS = ("test", "both")

# A row before checking: where it came from (for messages) and its column values.
Row = tuple[str, dict[str, Any]]


class SampleError(ValueError):
    """A sample row or the way rows are selected is wrong; the message names which and why."""


def read_sheet(path: str | os.PathLike[str]) -> list[Row]:
    """Rows of a tab-separated sample sheet, labelled by file and line (header = line 1).

    Everything is read as text (FOV ``01`` stays ``01``); an empty cell counts as not given,
    so the column's default applies.
    """
    if not Path(path).is_file():
        raise SampleError(f"sample sheet {path}: file not found; set 'samples' in the config to an existing TSV")
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SampleError(f"sample sheet {path} line {line}: byte 0x{data[exc.start]:02x} at column {column} is not "
                          "UTF-8 text; save the sheet as UTF-8 (e.g. 'Unicode (UTF-8)' in a spreadsheet's "
                          "'Save as' dialog)") from None
    sheet = pd.read_csv(io.BytesIO(data), sep="\t", dtype=str, keep_default_na=False, encoding="utf-8")
    return [(f"{path} line {i + 2}", {k: v for k, v in record.items() if v != ""})
            for i, record in enumerate(sheet.to_dict("records"))]


def discover(archive: Mapping[str, Any]) -> list[Row]:
    """Rows for the FOVs an FMD-style archive config selects.

    `archive` has ``root``, ``configurations`` (name -> ``train_fovs``, ``test_fovs``) and
    ``reference`` (a path template under root with ``{configuration}`` and ``{fov}``, or
    None to average the captures). A FOV listed in both lists gets split ``both``.
    """
    root = Path(archive["root"])
    template = archive.get("reference")
    rows: list[Row] = []
    for configuration, fovs in archive["configurations"].items():
        train = [str(f) for f in fovs.get("train_fovs", [])]
        test = [str(f) for f in fovs.get("test_fovs", [])]
        raw_dir = root / configuration / "raw"
        present = sorted((p.name for p in raw_dir.iterdir() if p.is_dir()), key=_natural) if raw_dir.is_dir() else []
        for fov in dict.fromkeys(train + test):
            label = f"archive configuration {configuration} FOV {fov}"
            if fov not in present:
                found = ", ".join(present) if present else f"none ({raw_dir} is missing or empty)"
                raise SampleError(f"{label}: no folder {raw_dir / fov}; FOVs present: {found}")
            split = "both" if fov in train and fov in test else "train" if fov in train else "test"
            reference = str(root / template.format(configuration=configuration, fov=fov)) if template else ""
            rows.append((label, {"configuration": configuration, "fov": fov, "raw": str(raw_dir / fov),
                                 "reference": reference, "split": split}))
    return rows


def noise_copy_rows(synthetic: Mapping[str, Any]) -> list[Row]:
    """Rows of the paper's synthetic-noise archive (`n2sr.synthetic_noise`) a config will generate.

    One configuration per noise model, one FOV ``<configuration>-<fov>`` per selected
    reference, scored against that reference; the noisy folders are produced by the pipeline,
    so only the references must exist now.
    """
    refs = synthetic["references"]
    root = Path(synthetic["root"])
    rows: list[Row] = []
    for noise in synthetic["noise"]:
        for name, source, split in reference_names(refs):
            rows.append((f"synthetic noise {noise} reference {name}",
                         {"configuration": noise, "fov": name, "raw": str(root / noise / "raw" / name),
                          "reference": source, "split": split}))
    return rows


def reference_names(references: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(FOV name, reference path, split) of each reference selected by `synthetic.references`."""
    out = []
    for configuration, fovs in references["configurations"].items():
        train = [str(f) for f in fovs.get("train_fovs", [])]
        test = [str(f) for f in fovs.get("test_fovs", [])]
        for fov in dict.fromkeys(train + test):
            split = "both" if fov in train and fov in test else "train" if fov in train else "test"
            path = Path(references["root"]) / references["path"].format(configuration=configuration, fov=fov)
            out.append((f"{configuration}-{fov}", str(path), split))
    return out


def check_rows(rows: Sequence[Row], schema: Mapping[str, Any],
               produced: Iterable[str | os.PathLike[str]] = (), adopted: Iterable[str] = (),
               policy: str = "auto") -> pd.DataFrame:
    """Validate rows against the sample schema and the file system; return the table.

    `produced` are folders the pipeline itself creates (the synthetic archive): paths inside
    them need not exist yet. `adopted` configurations reuse a model trained before (config
    ``models``), so they need no train FOV. `policy` is the reference policy of rows that
    leave it empty. The table is indexed by (configuration, fov).
    """
    adopted = set(adopted)
    if not rows:
        raise SampleError("no samples: the sheet or the archive selection is empty")
    produced = [os.path.abspath(p) for p in produced]
    seen: dict[tuple[str, str], str] = {}
    records = []
    for label, record in rows:
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(record))
        if error is not None:
            where = f"column {error.path[0]!r}: " if error.path else ""
            raise SampleError(f"{label}: {where}{error.message}")
        record = {**{k: v["default"] for k, v in schema["properties"].items() if "default" in v}, **record}
        record["reference_policy"] = record.get("reference_policy") or policy
        if record["reference_policy"] == "file" and not record.get("reference"):
            raise SampleError(f"{label}: reference_policy file needs a reference file in column reference")
        key = (record["configuration"], record["fov"])
        if key in seen:
            raise SampleError(f"{label}: configuration {key[0]} FOV {key[1]} is already given by {seen[key]}")
        seen[key] = label
        for column in ("raw", "reference"):
            path = record[column]
            if not path:
                continue
            if "{" in path or "}" in path:
                raise SampleError(f"{label}: {column} {path!r} contains '{{' or '}}', which Snakemake would read as a "
                                  "wildcard and replace; rename the file or folder")
            if not _inside(path, produced):
                _check_path(label, column, path)
            if path.startswith("-"):  # never read as an option by the commands the rules run
                record[column] = os.path.join(".", path)
        records.append(record)
    table = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    for configuration, part in table.groupby("configuration", sort=False):
        if (part["split"].isin(TEST_SPLITS).any() and not part["split"].isin(TRAIN_SPLITS).any()
                and configuration not in adopted):
            raise SampleError(f"configuration {configuration} has test FOVs but no FOV with split train or both, "
                              "so no model can be trained for it (or name one trained before in config models)")
    return table.set_index(["configuration", "fov"], drop=False).sort_index()


def sample_table(config: Mapping[str, Any], schema: Mapping[str, Any]) -> pd.DataFrame:
    """The checked table for a workflow config: from ``samples`` or ``archive``, exactly one."""
    sheet, archive = config.get("samples"), config.get("archive")
    synthetic = config.get("synthetic")
    policy = config.get("reference_policy") or "auto"
    if synthetic and synthetic.get("references"):
        if sheet is not None or archive is not None:
            raise SampleError("config: synthetic.references generates the samples; set samples and archive to null")
        return check_rows(noise_copy_rows(synthetic), schema, produced=[synthetic["root"]], policy=policy)
    if (sheet is None) == (archive is None):
        raise SampleError("config: set exactly one of 'samples' (a TSV sheet) and 'archive' (FMD-style discovery); "
                          f"got samples={sheet!r}, archive={'set' if archive else None}")
    rows = read_sheet(sheet) if sheet is not None else discover(archive)
    return check_rows(rows, schema, produced=[synthetic["root"]] if synthetic else [],
                      adopted=config.get("models") or {}, policy=policy)


def _check_path(label: str, column: str, path: str) -> None:
    """The sample's file exists: a symbolic link loop or a broken link is said as such."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            problem = "is a symbolic link loop (the link leads back to itself)"
        elif exc.errno == errno.ENOENT and os.path.islink(path):
            problem = f"is a broken symbolic link (to {os.readlink(path)!r}, which does not exist)"
        elif exc.errno == errno.ENOENT:
            problem = "does not exist"
        else:
            problem = f"cannot be opened ({exc.strerror})"
        raise SampleError(f"{label}: {column} {path!r} {problem} (paths are relative to the working "
                          f"directory {os.getcwd()})") from None


def _inside(path: str, folders: Sequence[str]) -> bool:
    path = os.path.abspath(path)
    return any(os.path.commonpath([path, folder]) == folder for folder in folders)


def _natural(name: str) -> tuple[int, str]:
    """FOV folders in numeric order where they are numbers: 2 before 10."""
    return (int(name), "") if name.isdigit() else (1 << 62, name)
