"""Step `add_noise`: the paper's synthetic-noise archive (Table 1): stored noisy copies of clean references.

The paper adds Gaussian, Poisson and mixed Poisson-Gaussian noise to FMD's averaged images
and trains and tests every method on the result. The noise is drawn here once, from a
recorded seed, and written to disk: every method then trains on the same fixed noisy
images, as on real data. Re-drawing the noise at every epoch would hand the network fresh
independent samples of each pixel, a luxury no real archive offers, and inflate PSNR.

    root/<noise>/manifest.csv                           one row per file: source, noise, seed
    root/<noise>/raw/<name>/capture_<kk>.tif            the noisy copies of reference <name>

The layout is the one `n2sr.synthetic` writes (and FMD uses), so ingest treats each noise
as a configuration and each reference as a field of view; the references themselves stay
where they are and are scored against directly. Everything is a function of (seed, noise
name, reference name, capture): adding a reference or a noise level leaves the others'
images unchanged. Each noise model is its own folder, written on its own, so the pipeline
makes one job (and one output) per noise model: adding a noise model to a finished
experiment generates, trains and scores that one alone.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from n2sr.errors import InputError
from n2sr.io.atomic import atomic_path
from n2sr.io.generated import check_folder, generated_folder
from n2sr.io.images import read_image, sha256_file
from n2sr.noise import FULL_SCALE, correlated_poisson_gaussian, correlation_kernel, paper_noise_model, quantize

NOISE_KEYS = ("lam", "sigma", "correlation")
WHAT = "a generated noise model"
DTYPES = ("float32", "uint8")


def parse_noise(text: str) -> tuple[str, dict[str, float]]:
    """``gaussian_s15:sigma=15`` -> ("gaussian_s15", {"sigma": 15.0}); the CLI's --noise."""
    name, sep, params = text.partition(":")
    if not sep or not name:
        raise ValueError(f"--noise {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE], e.g. mixed:lam=15,sigma=5")
    values: dict[str, float] = {}
    for item in filter(None, params.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in NOISE_KEYS:
            raise ValueError(f"--noise {text!r}: {item!r} is not KEY=VALUE with KEY one of {', '.join(NOISE_KEYS)}")
        try:
            values[key] = float(value)
        except ValueError:
            raise ValueError(f"--noise {text!r}: {key} value {value!r} is not a number") from None
    return name, values


def noisy_copy(clean: np.ndarray, *, lam: float | None = None, sigma: float = 0.0, rng: np.random.Generator,
               dtype: str = "float32", correlation: float = 0.0) -> np.ndarray:
    """One noisy copy of `clean` (0-255 scale) under the paper's noise model.

    ``correlation`` > 0 makes the noise spatially correlated, widefield-like: lag-1 correlation
    `correlation` along Y and X (`n2sr.noise.correlated_poisson_gaussian`; 0 draws exactly the
    paper's pixel-wise independent noise).

    ``float32`` keeps the noise exactly zero-mean with the stated variance (no clipping, so
    dark pixels can go negative); ``uint8`` clips to 0-255 and rounds, as an 8-bit camera
    file would, which biases the noise in the dark background.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    noisy = correlated_poisson_gaussian(clean, paper_noise_model(lam, sigma), correlation, rng)
    return quantize(noisy, dtype) if dtype == "uint8" else noisy.astype(dtype)


def add_noise(
    root: str | os.PathLike[str],
    references: Mapping[str, str | os.PathLike[str]],
    noise: Mapping[str, Mapping[str, float]],
    *,
    captures: int = 2,
    seed: int = 0,
    dtype: str = "float32",
) -> pd.DataFrame:
    """Write noisy copies of every reference under every noise model; return the manifest.

    Parameters
    ----------
    root : path
        Output directory; noise model ``<noise>`` goes to ``root/<noise>/`` (`n2sr.io.generated`):
        each file is written atomically and the model's ``manifest.csv`` last, so an
        interrupted run leaves no manifest (incomplete). A rerun replaces only the files its
        own earlier run recorded; a non-empty folder this step did not write is refused before
        anything is written. Folders of other noise models, and other files, are left alone.
    references : mapping name -> path
        Clean single-plane images on the 0-255 scale (FMD's avg50 PNGs); the name becomes
        the field-of-view folder, so it must be a plain folder name.
    noise : mapping name -> {"lam": float, "sigma": float, "correlation": float}
        Each entry is one configuration: Poisson noise with `lam` photons at full scale
        (omit for none) plus Gaussian noise of std `sigma` (default 0); see
        `n2sr.noise.paper_noise_model` for the formula. `correlation` (default 0): the noise's
        lag-1 spatial correlation, 0 to 0.707 (`n2sr.noise.correlation_kernel`).
    captures : int >= 1
        Independent noisy copies per reference (2: a Noise2Noise pair, as in the paper).
    seed : int
        Recorded in the manifest; the images are a function of it.
    dtype : "float32" (exact noise statistics) or "uint8" (clipped and rounded)

    Returns
    -------
    The manifests of all the noise models written, concatenated; ``path`` is relative to
    the model's folder, as in its ``manifest.csv``.
    """
    _check(references, noise, captures, dtype)
    root = Path(root)
    width = max(2, len(str(captures - 1)))
    files = [Path("raw", name, f"capture_{k:0{width}d}.tif").as_posix() for name in references for k in range(captures)]
    for noise_name in noise:  # every folder checked before anything is written
        check_folder(root / noise_name, files, owner="add-noise", what=WHAT)
    cleans = {name: _read_reference(Path(path)) for name, path in references.items()}
    manifests = []
    for noise_name, params in noise.items():
        lam, sigma = params.get("lam"), float(params.get("sigma", 0.0))
        rho = float(params.get("correlation", 0.0))
        model = paper_noise_model(lam, sigma)
        rows = []
        with generated_folder(root / noise_name, files, owner="add-noise", what=WHAT) as folder:
            for name, (clean, source, sha) in cleans.items():
                rng = np.random.default_rng([seed, _key(noise_name), _key(name)])
                for k in range(captures):
                    rel = Path("raw", name, f"capture_{k:0{width}d}.tif")
                    with atomic_path(folder.path(rel)) as tmp:
                        tifffile.imwrite(tmp, noisy_copy(clean, lam=lam, sigma=sigma, rng=rng, dtype=dtype,
                                                    correlation=rho),
                                         photometric="minisblack")
                    rows.append({"path": rel.as_posix(), "configuration": noise_name, "fov": name, "capture": k,
                                 "source": source, "source_sha256": sha, "lam": np.nan if lam is None else lam,
                                 "sigma": sigma, "correlation": rho, "a": model.a, "b": model.b, "dtype": dtype, "seed": seed})
            folder.manifest = pd.DataFrame(rows)
            manifests.append(folder.manifest)
    return pd.concat(manifests, ignore_index=True)


def _key(name: str) -> int:
    """A stable integer for a name (``hash()`` changes between interpreter runs)."""
    return zlib.crc32(name.encode("utf-8"))


def _read_reference(path: Path) -> tuple[np.ndarray, str, str]:
    image = read_image(path)
    if image.ndim != 2:
        image = np.squeeze(image)
    if image.ndim != 2:
        raise InputError(path, f"has shape {image.shape}; a reference must be a single plane")
    if image.min() < 0 or image.max() > FULL_SCALE:
        raise InputError(path, f"has values {image.min():g}..{image.max():g}; the paper's noise levels are "
                                  f"defined on the 0-{FULL_SCALE:g} scale (8-bit images)")
    return image.astype(np.float64), str(path), sha256_file(path)


def _check(references: Mapping[str, object], noise: Mapping[str, Mapping[str, float]], captures: int,
           dtype: str) -> None:
    """Reject a bad spec before anything is read or written, naming the offending entry."""
    if not references:
        raise ValueError("no references: give at least one NAME=PATH")
    if not noise:
        raise ValueError("no noise models: give at least one, e.g. gaussian_s15:sigma=15")
    for kind, names in (("reference", references), ("noise", noise)):
        for name in names:
            if not name or name != Path(name).name or name.startswith(".") or name in ("raw", "gt"):
                raise ValueError(f"{kind} name {name!r} must be a plain folder name")
    for name, params in noise.items():
        unknown = set(params) - set(NOISE_KEYS)
        if unknown or not set(params) & {"lam", "sigma"}:
            raise ValueError(f"noise {name!r} has keys {sorted(params)}; expected lam and/or sigma "
                             "(and optionally correlation)")
        try:
            paper_noise_model(params.get("lam"), float(params.get("sigma", 0.0)))
            correlation_kernel(float(params.get("correlation", 0.0)))
        except ValueError as exc:
            raise ValueError(f"noise {name!r}: {exc}") from None
    if captures < 1:
        raise ValueError(f"captures must be >= 1; got {captures}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
