"""The embedded demo archive: synthetic fluorescence images with known clean versions.

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
from scipy import ndimage

from n2sr import io

# Photons at full scale (clean = 1) and read noise in electrons. low_noise is roughly an
# FMD confocal capture (noisy PSNR ~ 25 dB); high_noise is darker (~ 19 dB).
DEMO_CONFIGURATIONS: dict[str, dict[str, float]] = {
    "low_noise": {"photons": 40.0, "read_sigma": 2.0},
    "high_noise": {"photons": 10.0, "read_sigma": 1.0},
}
# The clean image's full scale maps to this fraction of the dtype maximum, leaving headroom
# so that bright noisy pixels are rarely clipped.
FULL_SCALE = 0.8
_CONFIG_KEYS = {"photons", "read_sigma"}


def poisson_gaussian(clean: np.ndarray, photons: float, read_sigma: float, rng: np.random.Generator) -> np.ndarray:
    """One noisy capture of `clean` under the Poisson-Gaussian model of a camera.

    With ``a = 1 / photons`` and ``b = (read_sigma / photons)^2``::

        y = a * Poisson(x / a) + N(0, b)      so  E[y] = x,  Var[y] = a * x + b

    i.e. ``x * photons`` photoelectrons are counted (shot noise), read noise of
    `read_sigma` electrons is added, and the result is scaled back to the units of `clean`.
    This is the noise model FMD was built on (Zhang et al. 2019). No clipping: the caller
    decides how to quantise.

    Parameters
    ----------
    clean : ndarray (...), float, >= 0
        Noise-free intensity; 1.0 is "full scale", where `photons` photons are collected.
    photons : float > 0
        Expected photon count at intensity 1.0; fewer photons, more noise.
    read_sigma : float >= 0
        Standard deviation of the read noise in electrons (photon units).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, same shape as `clean`, float64
    """
    if not photons > 0 or not read_sigma >= 0:
        raise ValueError(f"need photons > 0 and read_sigma >= 0; got photons={photons}, read_sigma={read_sigma}")
    clean = np.asarray(clean, dtype=np.float64)
    if clean.size and clean.min() < 0:
        raise ValueError(f"clean intensities must be >= 0 (photon counts); minimum is {clean.min():g}")
    electrons = rng.poisson(clean * photons) + rng.normal(0.0, read_sigma, size=clean.shape)
    return electrons / photons


def clean_image(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A noise-free synthetic fluorescence plane: nuclei, filaments and puncta on a background.

    Smooth at the scale of a few pixels (everything is blurred by a Gaussian PSF), as real
    optics make it; that redundancy between neighbours is what a denoiser exploits.

    Returns
    -------
    ndarray (Y, X) float64 in [0, 1], maximum in [0.85, 1]
    """
    ny, nx = shape
    if ny < 16 or nx < 16:
        raise ValueError(f"synthetic planes must be at least 16x16 pixels; got {shape}")
    scale = min(ny, nx) / 128.0  # structure sizes follow the field of view
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    image = np.zeros(shape)

    # Nuclei: rotated elliptical Gaussians with a soft, slightly flat top.
    for _ in range(rng.integers(3, 8)):
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        sy, sx = rng.uniform(5, 12, size=2) * scale
        theta = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / sx
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / sy
        image += rng.uniform(0.3, 0.7) * np.exp(-0.5 * (u * u + v * v) ** 1.5)

    # Filaments and puncta: points splatted onto a grid, then blurred to width.
    lines = np.zeros(shape)
    for _ in range(rng.integers(4, 10)):
        _splat(lines, _filament(shape, rng), rng.uniform(0.25, 0.6))
    for _ in range(rng.integers(10, 30)):
        point = rng.uniform((0, 0), (ny, nx), size=(1, 2))
        _splat(lines, point, rng.uniform(2.0, 5.0))
    image += ndimage.gaussian_filter(lines, 1.2)

    image = ndimage.gaussian_filter(image, 1.0)  # the optics' point-spread function
    background = rng.uniform(0.03, 0.08)
    peak = rng.uniform(0.85, 1.0)
    return background + (peak - background) * image / max(image.max(), 1e-12)


def _filament(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Points every half pixel along a smooth random curve (a walk with drifting heading)."""
    ny, nx = shape
    steps = int(rng.uniform(0.5, 1.5) * max(ny, nx)) * 2
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.04, size=steps))
    start = rng.uniform((0, 0), (ny, nx))
    return start + 0.5 * np.cumsum(np.stack([np.sin(heading), np.cos(heading)], axis=1), axis=0)


def _splat(grid: np.ndarray, points: np.ndarray, weight: float) -> None:
    """Add `weight` at the nearest pixel of each point inside `grid`."""
    idx = np.rint(points).astype(np.int64)
    inside = (idx[:, 0] >= 0) & (idx[:, 0] < grid.shape[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < grid.shape[1])
    np.add.at(grid, (idx[inside, 0], idx[inside, 1]), weight)


def quantize(image: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """Map intensity 1.0 to `FULL_SCALE` of the dtype maximum, round half up, clip, cast."""
    dtype = np.dtype(dtype)
    top = np.iinfo(dtype).max
    return np.clip(np.floor(image * (FULL_SCALE * top) + 0.5), 0, top).astype(dtype)


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
    """Write a synthetic archive under `root` (replaced atomically) and return its manifest.

    Parameters
    ----------
    root : path
        Output directory; built as a temporary sibling and renamed into place, so an
        interrupted run never leaves a half archive. An existing archive (one with a
        ``manifest.csv``) is replaced; any other non-empty directory is refused.
    configurations : mapping name -> {"photons": float, "read_sigma": float}
        Noise parameters of each configuration (see `poisson_gaussian`).
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
    if root.exists() and any(root.iterdir()) and not (root / "manifest.csv").is_file():
        raise ValueError(f"{root}: exists and is not a synthetic archive (no manifest.csv); refusing to replace it")
    shape = (int(shape[0]), int(shape[1]))
    width = max(2, len(str(captures - 1)))
    cleans = [clean_image(shape, np.random.default_rng([seed, 0, fov])) for fov in range(1, fovs + 1)]
    rows = []
    with io.atomic_path(root) as tmp:
        for name, params in configurations.items():
            key = zlib.crc32(name.encode("utf-8"))  # stable across runs, unlike hash()
            for fov, clean in enumerate(cleans, start=1):
                base = {"configuration": name, "fov": fov, "height": shape[0], "width": shape[1], "dtype": dtype,
                        "photons": float(params["photons"]), "read_sigma": float(params["read_sigma"]), "seed": seed}
                rel = Path(name, "gt", str(fov), "clean.tif")
                _write_plane(tmp / rel, quantize(clean, dtype))
                rows.append({"path": rel.as_posix(), "kind": "gt", "capture": -1, **base})
                rng = np.random.default_rng([seed, 1, key, fov])
                for k in range(captures):
                    noisy = poisson_gaussian(clean, params["photons"], params["read_sigma"], rng)
                    rel = Path(name, "raw", str(fov), f"capture_{k:0{width}d}.tif")
                    _write_plane(tmp / rel, quantize(noisy, dtype))
                    rows.append({"path": rel.as_posix(), "kind": "raw", "capture": k, **base})
        columns = ["path", "configuration", "fov", "kind", "capture", "height", "width", "dtype",
                   "photons", "read_sigma", "seed"]
        manifest = pd.DataFrame(rows, columns=columns)
        manifest.to_csv(tmp / "manifest.csv", index=False)
    return manifest


def _write_plane(path: Path, plane: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, plane, photometric="minisblack")


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
