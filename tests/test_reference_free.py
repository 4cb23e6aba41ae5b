"""Archives without references (issue 15): the reference policy, and the reference-free
estimates carried from the denoising steps through evaluate into the CSVs."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from n2sr import estimate
from n2sr.cli import main
from n2sr.errors import InputError
from n2sr.io import images, omezarr
from n2sr.io.samples import SampleError, check_rows
from n2sr.noise import PoissonGaussian, poisson_gaussian
from n2sr.steps.evaluate import evaluate
from n2sr.steps.reference import no_reference, reference
from n2sr.synthetic import clean_image

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--iterations", "2", "--batch-size", "2", "--patch-size", "32", "--features", "8", "--final-features", "16",
        "--device", "cpu", "--precision", "fp32"]
NOISE = PoissonGaussian(4.0, 25.0)


def _clean(shape=(64, 64), seed=0) -> np.ndarray:
    return 20.0 + 200.0 * clean_image(shape, np.random.default_rng(seed))


def _noisy_stack(n: int, shape=(64, 64), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = _clean(shape, seed)
    return np.stack([np.clip(np.round(poisson_gaussian(x, NOISE, rng)), 0, 255) for _ in range(n)]).astype(np.uint8)


def test_single_capture_gets_no_reference_and_is_never_scored_against_itself(tmp_path):
    images.write_image(tmp_path / "one.zarr", _noisy_stack(1))
    reference(tmp_path / "one.zarr", tmp_path / "ref.zarr")  # auto
    why = no_reference(tmp_path / "ref.zarr")
    assert why is not None and "one capture" in why
    rows = evaluate(tmp_path / "ref.zarr", [tmp_path / "one.zarr"], methods=["noisy"], labels={"configuration": "A"})
    assert len(rows) == 1
    row = rows[0]
    assert all(math.isnan(row[m]) for m in ("psnr", "ssim", "psnr_per_image", "ssim_per_image"))
    assert row["no_reference"] == why
    # the estimates are there, in the noisy dtype's range: the noise energy as SURE of the input
    assert row["data_range"] == 255 and np.isfinite(row["est_psnr_sure"]) and np.isfinite(row["noise_a"])
    with pytest.raises(InputError, match="against itself"):
        reference(tmp_path / "one.zarr", tmp_path / "avg.zarr", policy="average")


def test_z_stack_without_reference_is_not_averaged(tmp_path):
    stack = _noisy_stack(4)[None, None]  # t = 1, c = 1, z = 4: planes, not repeats
    images.write_image(tmp_path / "z.zarr", stack)
    out = reference(tmp_path / "z.zarr", tmp_path / "ref.zarr")
    assert "4 z-planes" in no_reference(out)
    assert "0" not in omezarr.read_attrs(out) and not (out / "0").exists()  # no image was written


def test_policy_none_and_average_on_repeated_captures(tmp_path):
    images.write_image(tmp_path / "t.zarr", _noisy_stack(3))
    assert no_reference(reference(tmp_path / "t.zarr", tmp_path / "avg.zarr")) is None  # auto: averaged
    assert omezarr.open_image(tmp_path / "avg.zarr").shape[0] == 1
    assert no_reference(reference(tmp_path / "t.zarr", tmp_path / "none.zarr", policy="none")) == "reference_policy none"
    # policy file with an OME-Zarr: a given Zarr reference, taken as its captures' mean (the
    # sheet check refuses policy file without a reference column, test below)
    reference(tmp_path / "t.zarr", tmp_path / "f.zarr", policy="file")
    np.testing.assert_array_equal(omezarr.open_image(tmp_path / "f.zarr")[...], omezarr.open_image(tmp_path / "avg.zarr")[...])
    assert main(["reference", "--policy", "none", "--", str(tmp_path / "t.zarr"), str(tmp_path / "cli.zarr")]) == 0
    assert no_reference(tmp_path / "cli.zarr") == "reference_policy none"


def _schema() -> dict:
    return yaml.safe_load((ROOT / "workflow" / "schemas" / "samples.schema.yaml").read_text())


def test_sample_policy_column_defaults_to_the_config_and_file_needs_a_reference(tmp_path):
    (tmp_path / "raw.tif").touch()
    rows = [("l2", {"configuration": "A", "fov": "1", "raw": str(tmp_path / "raw.tif")}),
            ("l3", {"configuration": "A", "fov": "2", "raw": str(tmp_path / "raw.tif"), "reference_policy": "none"})]
    table = check_rows(rows, _schema(), policy="average")
    assert list(table["reference_policy"]) == ["average", "none"]
    with pytest.raises(SampleError, match="l4: reference_policy file needs a reference file"):
        check_rows([("l4", {**rows[0][1], "reference_policy": "file"})], _schema())
    with pytest.raises(SampleError, match="reference_policy"):
        check_rows([("l5", {**rows[0][1], "reference_policy": "copy"})], _schema())


@pytest.fixture(scope="module")
def denoised(tmp_path_factory) -> Path:
    """A 3-capture FOV, a tiny n2sr and n2v model, their outputs (2 captures) and BM3D's."""
    d = tmp_path_factory.mktemp("estimates")
    images.write_image(d / "noisy.zarr", _noisy_stack(3, (64, 64)))
    images.write_image(d / "clean.tif", _clean((64, 64)).astype(np.float32))
    for method in ("n2sr", "n2v"):
        assert main(["train", str(d / "noisy.zarr"), "--out", str(d / f"{method}.pt"), "--method", method, *TINY]) == 0
        assert main(["denoise", str(d / f"{method}.pt"), str(d / "noisy.zarr"), str(d / f"{method}.zarr"),
                     "--captures", "0,2", "--estimate-draws", "3"]) == 0
    assert main(["bm3d", str(d / "noisy.zarr"), str(d / "bm3d.zarr"), "--captures", "0,2"]) == 0
    return d


def test_denoising_steps_store_one_estimate_per_plane(denoised):
    for method, kind in (("n2sr", "complement"), ("n2v", "masked"), ("bm3d", "")):
        entries = omezarr.read_attrs(denoised / f"{method}.zarr")["estimates"]
        assert len(entries) == 2
        for e in entries:
            # unbiased, so it may dip below zero where the true MSE is small (BM3D on a 64 x 64 plane)
            assert math.isfinite(e["sure_mse"]) and e["sure_se"] > 0 and e["noise_a"] is not None
            assert e["held_out_kind"] == kind
            assert (e["held_out_mse"] is None) == (kind == "")
            assert kind == "" or e["held_out_draws"] == 3


def test_planes_above_estimate_pixels_are_estimated_on_crops(denoised, tmp_path):
    """The 64 x 64 planes within the default budget: whole; a 448 x 448 plane with
    --estimate-pixels 1024: 4 crops of 16 x 16, recorded and carried into the CSV (`est_pixels`)."""
    for method in ("n2sr", "bm3d"):
        assert {e["pixels"] for e in omezarr.read_attrs(denoised / f"{method}.zarr")["estimates"]} == {64 * 64}
    images.write_image(tmp_path / "noisy.zarr", _noisy_stack(1, (448, 448), seed=1))
    images.write_image(tmp_path / "clean.tif", _clean((448, 448), seed=1).astype(np.float32))
    assert main(["denoise", str(denoised / "n2sr.pt"), str(tmp_path / "noisy.zarr"), str(tmp_path / "n2sr.zarr"),
                 "--estimate-draws", "2", "--estimate-pixels", "1024"]) == 0
    assert main(["bm3d", str(tmp_path / "noisy.zarr"), str(tmp_path / "bm3d.zarr"), "--estimate-pixels", "1024"]) == 0
    for method in ("n2sr", "bm3d"):
        (entry,) = omezarr.read_attrs(tmp_path / f"{method}.zarr")["estimates"]
        assert entry["pixels"] == 1024 and math.isfinite(entry["sure_mse"])
        assert (entry["held_out_mse"] is not None) == (method == "n2sr")
        (row,) = evaluate(tmp_path / "clean.tif", [tmp_path / f"{method}.zarr"], csv=tmp_path / f"{method}.csv",
                          data_range=255, methods=[method], labels={"configuration": "A"},
                          noisy=tmp_path / "noisy.zarr")
        assert row["est_pixels"] == 1024 and pd.read_csv(tmp_path / f"{method}.csv")["est_pixels"].tolist() == [1024]


def test_scanned_reaches_the_estimates_of_every_step(denoised, tmp_path):
    """--scanned (config point_scanning): denoise, bm3d and evaluate (its noisy row) fit the plane's
    noise as a point scanner's (`n2sr.estimate.fit(..., scanned=True)`); the outputs record it."""
    stack = _noisy_stack(1, seed=2)
    images.write_image(tmp_path / "noisy.zarr", stack)
    images.write_image(tmp_path / "clean.tif", _clean(seed=2).astype(np.float32))
    want = {s: estimate.fit(stack[0].astype(np.float64), scanned=s) for s in (False, True)}
    assert want[True].a != pytest.approx(want[False].a)
    for scanned in (False, True):
        flag = ["--scanned"] if scanned else []
        out = {m: tmp_path / f"{m}-{scanned}.zarr" for m in ("n2sr", "bm3d")}
        assert main(["denoise", str(denoised / "n2sr.pt"), str(tmp_path / "noisy.zarr"), str(out["n2sr"]),
                     "--estimate-draws", "1", *flag]) == 0
        assert main(["bm3d", str(tmp_path / "noisy.zarr"), str(out["bm3d"]), *flag]) == 0
        for path in out.values():
            attrs = omezarr.read_attrs(path)
            (entry,) = attrs["estimates"]
            assert attrs["scanned"] is scanned and entry["noise_a"] == pytest.approx(want[scanned].a), path
        csv = tmp_path / f"noisy-{scanned}.csv"
        assert main(["evaluate", "--reference", str(tmp_path / "clean.tif"), str(tmp_path / "noisy.zarr"),
                     "--csv", str(csv), "--method", "noisy", "--data-range", "255", *flag]) == 0
        assert pd.read_csv(csv)["noise_a"].item() == pytest.approx(want[scanned].a)


def test_no_estimates_when_turned_off(denoised, tmp_path):
    assert main(["denoise", str(denoised / "n2sr.pt"), str(denoised / "noisy.zarr"), str(tmp_path / "off.zarr"),
                 "--captures", "0", "--estimate-draws", "0"]) == 0
    assert "estimates" not in omezarr.read_attrs(tmp_path / "off.zarr")


def test_evaluate_writes_every_estimate_column_beside_the_true_psnr(denoised, tmp_path):
    images.write_image(tmp_path / "ref.zarr", _clean((64, 64)).astype(np.float32))
    rows = []
    for method in ("n2sr", "n2v", "bm3d"):
        csv = tmp_path / f"{method}.csv"
        rows += evaluate(denoised / "clean.tif", [denoised / f"{method}.zarr"], csv=csv, data_range=255,
                         methods=[method], labels={"configuration": "A"}, noisy=denoised / "noisy.zarr")
        frame = pd.read_csv(csv)
        assert set(estimate.COLUMNS) <= set(frame.columns) and "no_reference" in frame.columns
        assert list(frame["image"]) == [f"{method}.zarr[0]", f"{method}.zarr[2]"]
    for row in rows:
        assert np.isfinite(row["psnr"]) and not np.isnan(row["est_psnr_sure"])  # +inf: an MSE estimate <= 0
        assert row["est_psnr_sure_lo"] <= row["est_psnr_sure"] <= row["est_psnr_sure_hi"]
        assert np.isfinite(row["residual_ratio"]) and np.isfinite(row["noise_lag1"])
        assert np.isnan(row["est_psnr_held_out"]) == (row["method"] == "bm3d")
    # the residual check reads the noisy capture each plane came from (t = 2 for the second row)
    noisy2 = omezarr.open_image(denoised / "noisy.zarr")[2, 0, 0].astype(np.float64)
    out2 = omezarr.open_image(denoised / "bm3d.zarr")[1, 0, 0].astype(np.float64)
    bm3d_row = [r for r in rows if r["method"] == "bm3d"][1]
    model = PoissonGaussian(bm3d_row["noise_a"], bm3d_row["noise_b"])
    assert bm3d_row["residual_ratio"] == pytest.approx(estimate.residual_check(noisy2, out2, model).variance_ratio)


def test_estimate_columns_are_documented():
    readme = (ROOT / "config" / "README.md").read_text()
    missing = [c for c in (*estimate.COLUMNS, "no_reference", "reference_policy", "estimate_draws")
               if not re.search(rf"`{c}`", readme)]
    assert not missing, f"config/README.md does not document {missing}"
