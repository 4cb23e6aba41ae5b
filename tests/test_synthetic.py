"""The synthetic demo archive: layout, determinism, noise model, configurations."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import tifffile

from n2sr import noise, synthetic
from n2sr.steps.synth import make_archive
from n2sr.metrics import psnr

SPEC = {"configurations": synthetic.DEMO_CONFIGURATIONS, "fovs": 2, "captures": 3, "shape": (48, 64)}


def test_layout_and_manifest(tmp_path):
    root = tmp_path / "demo"
    manifest = make_archive(root, seed=3, **SPEC)
    assert len(manifest) == 2 * 2 * (3 + 1)
    assert manifest.equals(pd.read_csv(root / "manifest.csv"))
    for row in manifest.itertuples():
        plane = tifffile.imread(root / row.path)
        assert plane.shape == (48, 64) and plane.dtype == np.uint8
    assert (root / "high_noise" / "raw" / "2" / "capture_02.tif").is_file()
    assert (root / "low_noise" / "gt" / "1" / "clean.tif").is_file()
    assert not list(tmp_path.glob(".demo*"))  # no temporary left behind


def test_deterministic_by_seed(tmp_path):
    def planes(root):
        return [tifffile.imread(p) for p in sorted(root.rglob("*.tif"))]

    a = planes(_archive(tmp_path / "a", seed=1))
    b = planes(_archive(tmp_path / "b", seed=1))
    c = planes(_archive(tmp_path / "c", seed=2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_configurations_share_clean_fovs_and_differ_in_noise(tmp_path):
    root = _archive(tmp_path / "demo", seed=0)
    gt = {c: tifffile.imread(root / c / "gt" / "1" / "clean.tif") for c in synthetic.DEMO_CONFIGURATIONS}
    assert np.array_equal(gt["low_noise"], gt["high_noise"])
    assert not np.array_equal(gt["low_noise"], tifffile.imread(root / "low_noise" / "gt" / "2" / "clean.tif"))
    score = {c: np.mean([psnr(gt[c], tifffile.imread(p), 255.0) for p in (root / c / "raw" / "1").glob("*.tif")])
             for c in gt}
    assert score["low_noise"] > score["high_noise"] + 3.0


def test_uint16_and_default_demo_is_fast(tmp_path):
    t0 = time.perf_counter()
    manifest = make_archive(tmp_path / "demo", dtype="uint16", seed=0)
    assert time.perf_counter() - t0 < 1.0
    assert len(manifest) == 2 * 3 * (4 + 1)
    plane = tifffile.imread(tmp_path / "demo" / manifest.path[0])
    assert plane.dtype == np.uint16 and plane.shape == (128, 128)
    assert plane.max() > 255  # uses the 16-bit range, not 8-bit values in a 16-bit file


def test_poisson_gaussian_statistics():
    rng = np.random.default_rng(0)
    x, photons, read_sigma = 0.4, 20.0, 3.0
    y = noise.poisson_gaussian(np.full((400, 500), x), synthetic.noise_model(photons, read_sigma), rng)
    a, b = 1 / photons, (read_sigma / photons) ** 2
    assert y.mean() == pytest.approx(x, abs=0.003)
    assert y.var() == pytest.approx(a * x + b, rel=0.02)


def test_clean_image_is_smooth_and_in_range():
    clean = synthetic.clean_image((96, 96), np.random.default_rng(5))
    assert clean.min() > 0 and 0.85 <= clean.max() <= 1.0
    # Neighbours are strongly correlated: what a denoiser can exploit.
    assert np.corrcoef(clean[:, 1:].ravel(), clean[:, :-1].ravel())[0, 1] > 0.9


@pytest.mark.parametrize(
    "change, match",
    [
        ({"configurations": {"a/b": {"photons": 1, "read_sigma": 1}}}, "plain folder name"),
        ({"configurations": {"a": {"photons": 1}}}, "expected exactly"),
        ({"configurations": {"a": {"photons": 0, "read_sigma": 1}}}, "photons > 0"),
        ({"fovs": 0}, "fovs >= 1"),
        ({"dtype": "float32"}, "uint8"),
    ],
)
def test_bad_spec_writes_nothing(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        make_archive(tmp_path / "demo", **{**SPEC, **change})
    assert not list(tmp_path.iterdir())


def test_replaces_an_archive_but_not_other_folders(tmp_path):
    root = _archive(tmp_path / "demo", seed=0)
    _archive(root, seed=1)  # a rerun replaces the old archive
    assert pd.read_csv(root / "manifest.csv").seed.eq(1).all()
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.txt").write_text("precious")
    with pytest.raises(ValueError, match="not a synthetic archive"):
        _archive(tmp_path / "home", seed=0)
    assert (tmp_path / "home" / "thesis.txt").read_text() == "precious"


def _archive(root, seed):
    make_archive(root, seed=seed, **SPEC)
    return root
