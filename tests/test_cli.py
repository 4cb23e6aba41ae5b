"""The command line: a TIFF round trip and one clear message per bad input."""

import json

import numpy as np
import pytest
import tifffile

from n2sr.cli import main

TINY = ["--iterations", "2", "--batch-size", "2", "--patch-size", "32", "--features", "8", "--val-every", "1",
        "--precision", "fp32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    noisy = rng.poisson(40, size=(70, 90)).astype(np.uint16)
    tifffile.imwrite(d / "noisy.tif", noisy)
    assert main(["train", str(d / "noisy.tif"), "--out", str(d / "m.pt"), "--curve", str(d / "c.csv"), *TINY]) == 0
    return d, noisy


def test_tiff_round_trip(trained, capsys):
    d, noisy = trained
    assert main(["denoise", str(d / "m.pt"), str(d / "noisy.tif"), str(d / "den.tif"), "--sr", str(d / "sr.tif")]) == 0
    with tifffile.TiffFile(d / "den.tif") as tif:
        den = tif.asarray()
        info = json.loads(tif.imagej_metadata["Info"])
    assert den.shape == noisy.shape and den.dtype == np.float32 and np.isfinite(den).all()
    assert tifffile.imread(d / "sr.tif").shape == (140, 180)
    assert info["model"].endswith("m.pt") and info["model_train_config"]["iterations"] == 2
    # photon counts (max ~70) in uint16 do not fill 16 bits: the fixed range must be given
    assert main(["evaluate", "--reference", str(d / "noisy.tif"), str(d / "den.tif"), "--csv", str(d / "e.csv")]) == 1
    assert "fits in 7 bits" in capsys.readouterr().err
    assert main(["evaluate", "--reference", str(d / "noisy.tif"), str(d / "den.tif"), "--csv", str(d / "e.csv"),
                 "--data-range", "100"]) == 0
    assert "PSNR" in capsys.readouterr().out
    assert (d / "e.csv").read_text().startswith("configuration,image,method,psnr,ssim")


def test_zarr_round_trip_matches_tiff(trained):
    d, noisy = trained
    main(["ingest", str(d / "noisy.tif"), str(d / "noisy.zarr")])
    assert main(["denoise", str(d / "m.pt"), str(d / "noisy.zarr"), str(d / "den.zarr"), "--tiff", str(d / "den2.tif"),
                 "--tile-size", "32", "--overlap", "exact"]) == 0
    main(["denoise", str(d / "m.pt"), str(d / "noisy.tif"), str(d / "den.tif"), "--overlap", "exact"])
    # Zarr in 32-pixel tiles == TIFF in one tile, bit for bit (overlap exact)
    np.testing.assert_array_equal(tifffile.imread(d / "den2.tif"), tifffile.imread(d / "den.tif"))


def _bad_inputs(d):
    (d / "empty.tif").write_bytes(b"")
    (d / "text.tif").write_text("not an image")
    tifffile.imwrite(d / "nan.tif", np.full((64, 64), np.nan, np.float32))
    tifffile.imwrite(d / "small.tif", np.zeros((16, 16), np.uint8))
    tifffile.imwrite(d / "rgb.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    return {
        "empty.tif": "empty", "text.tif": "cannot read", "nan.tif": "NaN", "small.tif": "smaller than the training patch",
        "rgb.tif": "RGB", "missing.tif": "no such file",
    }


def test_bad_inputs_fail_with_one_named_message(tmp_path, capsys):
    for name, problem in _bad_inputs(tmp_path).items():
        code = main(["train", str(tmp_path / name), "--out", str(tmp_path / "m.pt"), *TINY])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1, name
        assert err[-1].startswith(f"n2sr: error: {tmp_path / name}"), err
        assert problem in err[-1], err[-1]
        assert not (tmp_path / "m.pt").exists()


def test_wrong_capture_index_is_named(trained, capsys):
    d, _ = trained
    main(["ingest", str(d / "noisy.tif"), str(d / "cap.zarr")])
    assert main(["denoise", str(d / "m.pt"), str(d / "cap.zarr"), str(d / "x.zarr"), "--captures", "3"]) == 1
    assert "captures [3] do not exist" in capsys.readouterr().err
    assert not (d / "x.zarr").exists()
