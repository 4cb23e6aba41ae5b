"""`n2sr export`: a trained model as a BioImage Model Zoo package that bioimageio.core accepts
and that computes what `n2sr denoise` computes."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from n2sr.cli import main
from n2sr.config import DenoiseConfig, ModelConfig
from n2sr.io import checkpoints
from n2sr.nn.inference import Engine
from n2sr.nn.model import from_state, receptive_field
from n2sr.nn.normalize import Normalizer
from n2sr.steps.export import export

bioimageio_core = pytest.importorskip("bioimageio.core")
from bioimageio.spec import load_description  # noqa: E402

TINY = ["--iterations", "2", "--batch-size", "2", "--patch-size", "32", "--features", "8", "--final-features", "16",
        "--unet-out-channels", "8", "--sr-channels", "8", "--val-every", "1", "--precision", "fp32", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny Noise2SR model and a tiny Noise2Void one, trained on a 96x128 uint16 stack."""
    d = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    clean = 50 + 100 * rng.random((96, 128))
    tifffile.imwrite(d / "noisy.tif", rng.poisson(clean, size=(4, 96, 128)).astype(np.uint16),
                     photometric="minisblack")
    assert main(["train", str(d / "noisy.tif"), "--out", str(d / "n2sr.pt"), *TINY]) == 0
    assert main(["train", str(d / "noisy.tif"), "--out", str(d / "n2v.pt"), "--method", "n2v", *TINY]) == 0
    return d


def engine_output(model: Path, plane: np.ndarray) -> np.ndarray:
    """What `n2sr denoise` computes for `plane` (fp32 on the CPU)."""
    ckpt = checkpoints.load(model)
    net = from_state(ckpt["model_config"], ckpt["scale"], ckpt["model"])
    engine = Engine(net, DenoiseConfig(device="cpu", precision="fp32"), scale=ckpt["scale"],
                    receptive_field=receptive_field(ModelConfig(**ckpt["model_config"]), sr=ckpt["scale"] == 2),
                    normalizer=Normalizer.from_dict(ckpt["normalizer"]))
    return engine.denoise_plane(plane)[0]


@pytest.mark.parametrize("method, sample, shape", [("n2sr", True, (96, 128)), ("n2v", False, (128, 128))])
def test_exported_package_passes_bioimageio_test_and_reproduces_denoise(trained, method, sample, shape):
    """With --sample: its first plane (cropped to multiples of 32); without: a synthetic 128x128 plane."""
    package = trained / f"{method}.zip"
    if sample:  # the command, then bioimageio.core's test of the file it wrote
        assert main(["export", str(trained / f"{method}.pt"), "--out", str(package),
                     "--sample", str(trained / "noisy.tif")]) == 0
        summary = bioimageio_core.test_model(package, weight_format="torchscript", devices=["cpu"])
        assert summary.status == "passed", summary.format()
    else:  # the step, which returns the summary of the test_model it ran on the package
        summary = export(trained / f"{method}.pt", package)
        assert summary["status"] == "passed"
        assert any("Reproduce test outputs" in d["name"] and d["status"] == "passed" for d in summary["details"])
    names = zipfile.ZipFile(package).namelist()
    assert {"rdf.yaml", "weights.pt", "README.md", "test_input.npy", "test_output.npy", "cover.png"} <= set(names)

    descr = load_description(package)
    assert descr.cite[0].doi == "10.1007/978-3-031-16446-0_32"
    # tiling consumers crop the engine's default overlap (32) and get tiles of at least 32 between halos
    assert [a.halo for a in descr.outputs[0].axes[2:]] == [32, 32]
    assert [(a.size.min, a.size.step) for a in descr.inputs[0].axes[2:]] == [(96, 32), (96, 32)]
    with zipfile.ZipFile(package) as z:
        x, y = (np.load(io.BytesIO(z.read(name))) for name in ("test_input.npy", "test_output.npy"))
    assert x.shape == (1, 1, *shape)
    expected = engine_output(trained / f"{method}.pt", x[0, 0])
    np.testing.assert_allclose(y[0, 0], expected, rtol=1e-6)

    # the package's network itself, as a consumer runs it, on another input size and batch
    with zipfile.ZipFile(package) as z, z.open("weights.pt") as f:
        net = torch.jit.load(f)
    planes = tifffile.imread(trained / "noisy.tif")[:2, :96, :96].astype(np.float32)
    with torch.no_grad():
        got = net(torch.from_numpy(planes)[:, None])[:, 0].numpy()
    for plane, out in zip(planes, got):
        np.testing.assert_allclose(out, engine_output(trained / f"{method}.pt", plane), rtol=1e-4, atol=1e-4)


def test_export_refuses_a_non_zip_output_a_stride_3_model_and_a_small_sample(trained, tmp_path, capsys):
    assert main(["export", str(trained / "n2sr.pt"), "--out", str(tmp_path / "model.pt")]) == 1
    assert ".zip" in capsys.readouterr().err
    ckpt = torch.load(trained / "n2sr.pt", weights_only=True)
    checkpoints.save(tmp_path / "s3.pt", {**ckpt, "stride": 3})
    assert main(["export", str(tmp_path / "s3.pt"), "--out", str(tmp_path / "s3.zip")]) == 1
    assert "stride 3" in capsys.readouterr().err
    assert not (tmp_path / "s3.zip").exists()
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((64, 200), np.uint16))
    assert main(["export", str(trained / "n2sr.pt"), "--out", str(tmp_path / "m.zip"),
                 "--sample", str(tmp_path / "small.tif")]) == 1
    assert "smaller than the 96x96" in capsys.readouterr().err
