"""Clean synthetic fluorescence planes for the embedded demo archive (written by `n2sr.steps.synth`).

Because the noise-free image is known, the demo's PSNR/SSIM measure the denoiser rather than
a reference's own noise. Pure numerics: `n2sr.steps.synth` lays the archive out on disk.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from n2sr.noise import PoissonGaussian

# Photons at full scale (clean = 1) and read noise in electrons (see `noise_model`). low_noise is roughly an
# FMD confocal capture (noisy PSNR ~ 25 dB); high_noise is darker (~ 19 dB).
DEMO_CONFIGURATIONS: dict[str, dict[str, float]] = {
    "low_noise": {"photons": 40.0, "read_sigma": 2.0},
    "high_noise": {"photons": 10.0, "read_sigma": 1.0},
}
# The clean image's full scale maps to this fraction of the dtype maximum, leaving headroom
# so that bright noisy pixels are rarely clipped.
FULL_SCALE = 0.8


def noise_model(photons: float, read_sigma: float) -> PoissonGaussian:
    """A camera collecting `photons` photoelectrons at intensity 1.0 with `read_sigma` electrons of
    read noise, in intensity units: ``a = 1 / photons``, ``b = (read_sigma / photons)^2``.

    This is the noise model FMD was built on (Zhang et al. 2019); fewer photons, more noise.
    """
    if not photons > 0 or not read_sigma >= 0:
        raise ValueError(f"need photons > 0 and read_sigma >= 0; got photons={photons}, read_sigma={read_sigma}")
    return PoissonGaussian(1.0 / photons, (read_sigma / photons) ** 2)


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
