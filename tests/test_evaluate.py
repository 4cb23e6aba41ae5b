"""Per-image rows, CSV columns, summary statistics and the Table-2 pivot."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from n2sr import tables
from n2sr.io import csvs
from n2sr.steps.summarize import summarize
from n2sr.metrics import evaluate_pair


@pytest.fixture
def ref() -> np.ndarray:
    return np.random.default_rng(0).integers(10, 240, size=(24, 24)).astype(np.uint8)


def test_evaluate_images_rows(ref):
    noisy = np.clip(ref + np.random.default_rng(1).normal(0, 8, ref.shape), 0, 255).astype(np.uint8)
    stack = np.stack([noisy, ref])  # (t, y, x): one row per plane
    rows = tables.evaluate_images(ref, {"a.tif": noisy, "b.zarr": stack},
                                    labels={"configuration": "A", "method": "noisy"})
    assert [r["image"] for r in rows] == ["a.tif", "b.zarr[0]", "b.zarr[1]"]
    assert all(r["configuration"] == "A" and r["method"] == "noisy" for r in rows)
    assert rows[0]["psnr"] == pytest.approx(evaluate_pair(ref, noisy)["psnr"])
    assert rows[1]["psnr"] == rows[0]["psnr"] and rows[2]["psnr"] == math.inf


def test_evaluate_images_matches_reference_planes(ref):
    refs = np.stack([ref, ref[::-1]])
    rows = tables.evaluate_images(refs, {"x": refs.copy()}, fixed_data_range=255)
    assert [r["psnr"] for r in rows] == [math.inf, math.inf]
    with pytest.raises(ValueError, match="3 image plane"):
        tables.evaluate_images(refs, {"x": np.stack([ref] * 3)})
    with pytest.raises(ValueError, match="different planes"):
        tables.evaluate_images(ref, {"x": ref[:-1]})
    with pytest.raises(ValueError, match="overwrite"):
        tables.evaluate_images(ref, {"x": ref}, labels={"psnr": "1"})


def test_write_image_csv_columns(tmp_path, ref):
    rows = tables.evaluate_images(ref, {"a": ref // 2}, labels={"method": "n2sr", "fov": "1", "configuration": "A"})
    path = csvs.write_image_csv(rows, tmp_path / "sub" / "a.csv")
    frame = pd.read_csv(path)
    expected = ["configuration", "image", "method", "psnr", "ssim", "psnr_per_image", "ssim_per_image", "data_range"]
    assert list(frame.columns[: len(expected)]) == expected
    assert "fov" in frame.columns and frame.loc[0, "data_range"] == 255
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.csv"]  # no temporary left
    with pytest.raises(ValueError, match="lack columns"):
        csvs.write_image_csv(tables.evaluate_images(ref, {"a": ref}), tmp_path / "b.csv")


def _per_image_csvs(tmp_path) -> list:
    """Hand-made rows: A/noisy psnr 20, 22, 24; A/n2sr 30, 32; NA/noisy 10 (n=1)."""
    # "NA" must stay a name, not become a missing value.
    cases = [("A", "n2sr", [30, 32]), ("A", "noisy", [20, 22, 24]), ("NA", "noisy", [10])]
    paths = []
    for config, method, values in cases:
        rows = [{"configuration": config, "image": f"i{i}", "method": method, "psnr": v, "ssim": v / 100,
                 "psnr_per_image": v - 2, "ssim_per_image": v / 200, "data_range": 255, "data_range_per_image": 200}
                for i, v in enumerate(values)]
        paths.append(csvs.write_image_csv(rows, tmp_path / f"{config}_{method}.csv"))
    return paths


def test_summarize_statistics_and_files(tmp_path):
    out = tmp_path / "reports"
    summary = summarize(_per_image_csvs(tmp_path), out)
    assert sorted(p.name for p in out.iterdir()) == ["A_summary.csv", "NA_summary.csv", "estimates", "summary.csv",
                                                     "table.csv", "table_fixed.csv"]
    assert sorted(p.name for p in (out / "estimates").iterdir()) == ["A.png", "NA.png"]  # "no estimate" panels
    assert list(zip(summary.configuration, summary.method)) == [("A", "noisy"), ("A", "n2sr"), ("NA", "noisy")]
    a_noisy = summary.iloc[0]
    assert a_noisy.n == 3
    assert a_noisy.psnr_mean == pytest.approx(22.0) and a_noisy.psnr_std == pytest.approx(2.0)
    assert a_noisy.ssim_mean == pytest.approx(0.22) and a_noisy.psnr_per_image_mean == pytest.approx(20.0)
    assert summary.iloc[1].psnr_std == pytest.approx(math.sqrt(2.0))
    assert summary.iloc[2].n == 1 and math.isnan(summary.iloc[2].psnr_std)
    assert pd.read_csv(out / "summary.csv").shape == summary.shape
    assert list(pd.read_csv(out / "A_summary.csv").method) == ["noisy", "n2sr"]


def test_table_pivot(tmp_path):
    out = tmp_path / "reports"
    summarize(_per_image_csvs(tmp_path), out)
    table = pd.read_csv(out / "table.csv", keep_default_na=False)
    assert list(table.columns) == ["configuration", "convention", "n", "noisy", "n2sr"]
    assert table.shape == (2, 5)
    # A's methods were scored on different numbers of images: each cell says its own n
    assert table.loc[0, "n"] == "" and table.loc[1, "n"] == "1"
    assert table.loc[0, "noisy"] == "20.00/0.1100 (n=3)" and table.loc[0, "n2sr"] == "29.00/0.1550 (n=2)"
    assert table.loc[1, "n2sr"] == "" and table.loc[1, "noisy"] == "8.00/0.0500"  # NA was not denoised
    fixed = pd.read_csv(out / "table_fixed.csv", keep_default_na=False)
    assert fixed.loc[1, "noisy"] == "10.00/0.1000" and set(fixed.convention) == {"fixed"}


def test_summarize_rejects_bad_csv(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"configuration": ["A"], "psnr": [1.0]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="bad.csv: missing columns"):
        summarize([bad], tmp_path / "out")
    blank = tmp_path / "blank.csv"
    pd.DataFrame({"configuration": [""], "image": ["a"], "method": ["noisy"], "psnr": [1.0], "ssim": [0.5],
                  "psnr_per_image": [1.0], "ssim_per_image": [0.5]}).to_csv(blank, index=False)
    with pytest.raises(ValueError, match="blank.csv: empty values in columns \\['configuration'\\]"):
        summarize([blank], tmp_path / "out")
    with pytest.raises(ValueError, match="no per-image CSVs"):
        summarize([], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_evaluate_step_range_source_and_bits(tmp_path):
    """12-bit data in uint16: refused without a range (one line naming the reference), scored with
    --bits 12, and the CSV records where the range came from; summary and pivot still work."""
    import tifffile

    from n2sr.cli import main

    rng = np.random.default_rng(1)
    ref = rng.integers(100, 4000, (32, 32)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "ref.tif", ref)
    tifffile.imwrite(tmp_path / "img.tif", (ref + rng.integers(0, 60, ref.shape)).astype(np.uint16))
    args = ["evaluate", "--reference", str(tmp_path / "ref.tif"), str(tmp_path / "img.tif"),
            "--label", "configuration=A", "--csv", str(tmp_path / "m.csv")]
    assert main(args) == 1 and not (tmp_path / "m.csv").exists()
    assert main([*args, "--bits", "12"]) == 0
    frame = pd.read_csv(tmp_path / "m.csv")
    assert list(frame.columns[7:10]) == ["data_range", "data_range_per_image", "data_range_source"]
    assert frame.loc[0, "data_range"] == 4095 and frame.loc[0, "data_range_source"] == "bits"
    summary = summarize([tmp_path / "m.csv"], tmp_path / "reports")
    assert summary.loc[0, "n"] == 1
    assert pd.read_csv(tmp_path / "reports/table_fixed.csv").loc[0, "convention"] == "fixed"


def test_summary_counts_unbounded_estimates():
    """A plane whose MSE estimate is <= 0 (+inf dB) is counted, not averaged into an inf mean."""
    rows = pd.DataFrame({"configuration": "A", "method": "n2sr", "image": ["i0", "i1", "i2"],
                         **{m: 1.0 for m in tables.METRICS},
                         "est_psnr_sure": [30.0, math.inf, 34.0], "est_psnr_held_out": [31.0, 33.0, np.nan]})
    summary = tables.summary_table(rows).iloc[0]
    assert summary.est_psnr_sure_mean == pytest.approx(32.0) and summary.est_psnr_sure_n_inf == 1
    assert summary.est_psnr_held_out_mean == pytest.approx(32.0) and summary.est_psnr_held_out_n_inf == 0
    columns = list(tables.summary_table(rows).columns)
    assert columns.index("est_psnr_sure_n_inf") == columns.index("est_psnr_sure_std") + 1


def test_evaluate_estimate_pixels_measures_large_planes_on_crops(tmp_path):
    """`--estimate-pixels` reaches the reference-free columns: the noisy row's estimate covers the
    crops only (0: the whole plane)."""
    import tifffile

    from n2sr.cli import main

    rng = np.random.default_rng(2)
    ref = rng.integers(40, 200, (128, 128)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "ref.tif", ref)
    tifffile.imwrite(tmp_path / "noisy.tif", np.clip(ref + rng.normal(0, 10, ref.shape), 0, 255).astype(np.uint8))
    for pixels, expected in ((4096, 4096), (0, 128 * 128)):
        csv = tmp_path / f"m{pixels}.csv"
        assert main(["evaluate", "--reference", str(tmp_path / "ref.tif"), str(tmp_path / "noisy.tif"),
                     "--method", "noisy", "--csv", str(csv), "--estimate-pixels", str(pixels)]) == 0
        assert pd.read_csv(csv).loc[0, "est_pixels"] == expected
