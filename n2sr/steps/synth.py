"""Step `synth`: the embedded demo archive, synthetic fluorescence images with known clean versions.

The pipeline runs end to end on it without any download, and because the noise-free image
is known, the demo's PSNR/SSIM measure the denoiser rather than the reference's own noise.
The layout mimics FMD's (``<configuration>/raw/<fov>/...``, ``<configuration>/gt/<fov>/...``)
so the same ingest code handles both:

    root/manifest.csv
    root/<configuration>/raw/<fov>/capture_<kk>.tif   one noisy plane per file
    root/<configuration>/gt/<fov>/clean.tif            the noise-free plane, same dtype

FOVs are numbered from 1 as in FMD. FOV ``k`` shows the same clean sample in every
configuration, so configurations differ only by their noise: their scores are comparable.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import yaml

from n2sr.errors import InputError
from n2sr.io.atomic import atomic_path
from n2sr.io.generated import generated_folder
from n2sr.io.images import check_exists
from n2sr.noise import poisson_gaussian, quantize
from n2sr.synthetic import DEMO_CONFIGURATIONS, FULL_SCALE, clean_image, noise_model

_CONFIG_KEYS = {"photons", "read_sigma"}


def synth(out_dir: str | os.PathLike[str], *, seed: int = 0, spec: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Generate the demo archive; `spec` is a YAML file of `make_archive` keywords."""
    kwargs = {} if spec is None else _read_spec(spec)
    return make_archive(out_dir, seed=seed, **kwargs)


_SPEC_KEYS = ("configurations", "fovs", "captures", "shape", "dtype")  # make_archive's keywords a spec may set


def _read_spec(spec: str | os.PathLike[str]) -> dict:
    """The keywords of a spec file, checked: a YAML mapping of `_SPEC_KEYS` only."""
    try:
        with open(check_exists(spec), encoding="utf-8") as f:
            kwargs = yaml.safe_load(f) or {}
    except UnicodeDecodeError as exc:
        raise InputError(spec, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise InputError(spec, f"not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(kwargs, dict):
        raise InputError(spec, f"expected a mapping of {', '.join(_SPEC_KEYS)}; got {type(kwargs).__name__}")
    unknown = [str(k) for k in kwargs if k not in _SPEC_KEYS]
    if unknown:
        raise InputError(spec, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                               f"a spec may set {', '.join(_SPEC_KEYS)} (the seed comes from synthetic.seed)")
    if "shape" in kwargs:
        if not isinstance(kwargs["shape"], list):
            raise InputError(spec, f"shape must be a list [Y, X]; got {kwargs['shape']!r}")
        kwargs["shape"] = tuple(kwargs["shape"])
    return kwargs


def _quantize(image: np.ndarray, dtype: str) -> np.ndarray:
    """Intensity 1.0 -> `FULL_SCALE` of the dtype maximum, rounded half up, clipped."""
    return quantize(image, dtype, FULL_SCALE * np.iinfo(np.dtype(dtype)).max)


def make_archive(
    root: str | os.PathLike[str],
    *,
    configurations: Mapping[str, Mapping[str, float]] = DEMO_CONFIGURATIONS,
    fovs: int = 3,
    captures: int = 4,
    shape: tuple[int, int] = (128, 128),
    dtype: str = "uint8",
    seed: int = 0,
) -> pd.DataFrame:
    """Write a synthetic archive under `root` and return its manifest.

    Parameters
    ----------
    root : path
        Output directory (`n2sr.io.generated`): every file is written atomically and
        ``manifest.csv`` last, so an interrupted run leaves no manifest (the archive is
        incomplete). A rerun replaces only the files its own earlier run recorded; a
        non-empty folder this step did not write is refused, and nothing in it is touched.
    configurations : mapping name -> {"photons": float, "read_sigma": float}
        Noise parameters of each configuration (see `n2sr.synthetic.noise_model`).
    fovs, captures : int >= 1
        Fields of view per configuration and noisy captures per field of view.
    shape : (Y, X)
    dtype : "uint8" or "uint16"
    seed : int
        Everything is a function of (seed, configuration name, FOV, capture): adding a
        configuration or FOV leaves the others' images unchanged.

    Returns
    -------
    pandas.DataFrame
        One row per file: ``path`` (relative to `root`), ``configuration``, ``fov``,
        ``kind`` (``raw`` or ``gt``), ``capture`` (-1 for gt), ``height``, ``width``,
        ``dtype``, ``photons``, ``read_sigma``, ``seed``; also written to
        ``root/manifest.csv``.
    """
    _check_spec(configurations, fovs, captures, shape, dtype)
    root = Path(root)
    shape = (int(shape[0]), int(shape[1]))
    width = max(2, len(str(captures - 1)))
    cleans = [clean_image(shape, np.random.default_rng([seed, 0, fov])) for fov in range(1, fovs + 1)]
    rows = []
    files = [Path(name, kind, str(fov), leaf).as_posix() for name in configurations for fov in range(1, fovs + 1)
             for kind, leaf in [("gt", "clean.tif"), *(("raw", f"capture_{k:0{width}d}.tif") for k in range(captures))]]
    with generated_folder(root, files, owner="synth", what="a synthetic archive") as folder:
        for name, params in configurations.items():
            key = zlib.crc32(name.encode("utf-8"))  # stable across runs, unlike hash()
            for fov, clean in enumerate(cleans, start=1):
                base = {"configuration": name, "fov": fov, "height": shape[0], "width": shape[1], "dtype": dtype,
                        "photons": float(params["photons"]), "read_sigma": float(params["read_sigma"]), "seed": seed}
                rel = Path(name, "gt", str(fov), "clean.tif")
                _write_plane(folder.path(rel), _quantize(clean, dtype))
                rows.append({"path": rel.as_posix(), "kind": "gt", "capture": -1, **base})
                rng = np.random.default_rng([seed, 1, key, fov])
                for k in range(captures):
                    noisy = poisson_gaussian(clean, noise_model(params["photons"], params["read_sigma"]), rng)
                    rel = Path(name, "raw", str(fov), f"capture_{k:0{width}d}.tif")
                    _write_plane(folder.path(rel), _quantize(noisy, dtype))
                    rows.append({"path": rel.as_posix(), "kind": "raw", "capture": k, **base})
        columns = ["path", "configuration", "fov", "kind", "capture", "height", "width", "dtype",
                   "photons", "read_sigma", "seed"]
        folder.manifest = manifest = pd.DataFrame(rows, columns=columns)
    return manifest


def _write_plane(path: Path, plane: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, plane, photometric="minisblack")


def _check_spec(configurations: Mapping[str, Mapping[str, float]], fovs: int, captures: int,
                shape: tuple[int, int], dtype: str) -> None:
    """Reject a bad spec before anything is written, naming the offending key."""
    if not configurations:
        raise ValueError("configurations is empty; give at least one, e.g. {'demo': {'photons': 30, 'read_sigma': 2}}")
    for name, params in configurations.items():
        if not name or name != Path(name).name or name.startswith("."):
            raise ValueError(f"configuration name {name!r} must be a plain folder name")
        if set(params) != _CONFIG_KEYS:
            raise ValueError(f"configuration {name!r} has keys {sorted(params)}; expected exactly {sorted(_CONFIG_KEYS)}")
        if not params["photons"] > 0 or not params["read_sigma"] >= 0:
            raise ValueError(f"configuration {name!r}: need photons > 0 and read_sigma >= 0; got {dict(params)}")
    if fovs < 1 or captures < 1:
        raise ValueError(f"need fovs >= 1 and captures >= 1; got fovs={fovs}, captures={captures}")
    if len(shape) != 2:
        raise ValueError(f"shape must be (Y, X); got {shape}")
    if dtype not in ("uint8", "uint16"):
        raise ValueError(f"dtype must be 'uint8' or 'uint16'; got {dtype!r}")
