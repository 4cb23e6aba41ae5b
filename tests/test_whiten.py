"""Noise whitening for correlated noise (`n2sr.nn.whiten`): the filters whiten and invert, the
choice follows the measured noise, windows match whole planes, and a whitened model is recorded
in its checkpoint and honoured by `n2sr denoise`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch.nn.functional as F

from n2sr.config import DenoiseConfig, ModelConfig, TrainConfig
from n2sr.correlation import estimate_kernel, measured_kernel
from n2sr.errors import InputError
from n2sr.io import checkpoints, omezarr
from n2sr.cli import main
from n2sr.nn.decorrelate import resolve_stride, runner
from n2sr.nn.inference import Engine
from n2sr.nn.normalize import Normalizer
from n2sr.nn.whiten import Whitened, apply, complete, filters
from n2sr.steps.denoise import denoise
from n2sr.steps.train import train_planes
from n2sr.synthetic import clean_image
from test_decorrelate import noisy  # correlated Poisson-Gaussian noise on a flat 384^2 plane


@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_whitened_noise_is_white_and_recolouring_undoes_whitening(rho):
    y = noisy(rho)
    analysis, synthesis = filters(measured_kernel(y))
    white = apply(y, analysis)
    k = estimate_kernel(white)
    assert abs(k[2, 3]) < 0.1 and abs(k[3, 2]) < 0.1 and abs(k[3, 3]) < 0.1  # rho 0.3: ~0, 0.6: ~0.08 (floor)
    if rho == 0.3:
        assert abs(k[2, 3]) < 0.02
    clean = 20.0 + 200.0 * clean_image((256, 256), np.random.default_rng(1))
    back = apply(apply(clean, analysis), synthesis)
    inner = (slice(32, -32), slice(32, -32))
    assert np.abs(back - clean)[inner].max() < 0.01 * np.ptp(clean)
    assert np.allclose(apply(np.full((64, 64), 7.0), analysis), 7.0)  # a constant passes unchanged
    assert analysis.sum() == pytest.approx(1.0) and synthesis.sum() == pytest.approx(1.0)


def test_auto_whitens_correlated_noise_only():
    planes = [noisy(0.3, seed=s).astype(np.float32) for s in range(2)]
    stride, corr, kernel = resolve_stride("auto", planes, "auto")
    assert stride == 2 and kernel is not None and corr.lag1 == pytest.approx(0.3, abs=0.05)
    assert resolve_stride("auto", planes, False)[::2] == (3, None)  # the wider stride without whitening
    white = [noisy(0.0, seed=s).astype(np.float32) for s in range(2)]
    assert resolve_stride(2, white, "auto")[2] is None and resolve_stride("auto", white, "auto")[0] == 2
    weak = [noisy(0.1, seed=s).astype(np.float32) for s in range(2)]  # confocal-like: left as it is
    assert resolve_stride(2, weak, "auto")[2] is None and resolve_stride(2, weak, True)[2] is not None
    assert resolve_stride(3, planes, "auto") == (3, None, None)  # an explicit wider stride is kept, unwhitened
    strong = [noisy(0.6, seed=s).astype(np.float32) for s in range(2)]  # whitening would floor: stride 3
    assert resolve_stride("auto", strong, "auto")[::2] == (3, None) and not complete(measured_kernel(strong[0]))
    assert resolve_stride(2, strong, "auto")[2] is not None and complete(measured_kernel(planes[0]))
    with pytest.raises(ValueError, match="stride 2"):
        resolve_stride(3, planes, True)
    with pytest.raises(ValueError, match="whiten"):
        TrainConfig(stride=3, whiten=True)


def test_a_window_with_its_context_matches_the_whole_plane():
    """The streamer cuts blocks with `context` pixels around them: a block's region must be what
    the whole plane gives there (both filters and the network reach into the context)."""
    def forward(x):  # a 2x "network" with a 3x3 reach: blur, then nearest upsampling
        return F.interpolate(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False), scale_factor=2)
    engine = Engine(forward, DenoiseConfig(device="cpu", overlap=2), scale=2, receptive_field=2,
                    normalizer=Normalizer(0.0, 1.0, "range"))
    plane = noisy(0.3)[:160, :150].astype(np.float32)
    run = Whitened(engine, measured_kernel(noisy(0.3)))
    whole = run.denoise_array(plane[None], progress=False)[0][0]
    c = run.context
    y0, x0, y1, x1 = 50, 40, 90, 100
    block = plane[y0 - c:y1 + c, x0 - c:x1 + c][None]
    region, _ = run.denoise_window(block, ((y0 - c, x0 - c), (y0, x0, y1, x1), plane.shape))
    np.testing.assert_allclose(region[0], whole[y0:y1, x0:x1], atol=1e-3)
    with pytest.raises(ValueError, match="no 2x super-resolved output"):
        run.denoise_window(block, ((0, 0), (0, 0, *block.shape[-2:]), block.shape[-2:]), return_sr=True)
    assert isinstance(runner(engine, 2, None), Engine) and isinstance(runner(engine, 2, [[1.0]]), Whitened)


def test_checkpoint_records_the_whitening_and_denoise_honours_it(tmp_path):
    small = ModelConfig(features=8, final_features=8, unet_out_channels=8, sr_channels=8)
    cfg = TrainConfig(iterations=2, batch_size=2, patch_size=32, val_fraction=0.0, device="cpu", model=small)
    plane = np.clip(noisy(0.3)[:256, :256], 0, 255).astype(np.float32)
    train_planes([plane], tmp_path / "m.pt", cfg, progress=False)
    ckpt = checkpoints.load(tmp_path / "m.pt")
    assert ckpt["stride"] == 2 and ckpt["stride_choice"]["whiten_requested"] == "auto"
    kernel = np.asarray(ckpt["whiten"])
    assert kernel.shape == (5, 5) and kernel[2, 3] == pytest.approx(0.3, abs=0.06)
    tifffile.imwrite(tmp_path / "in.tif", plane)
    denoise(tmp_path / "m.pt", tmp_path / "in.tif", tmp_path / "out.tif", DenoiseConfig(device="cpu"))
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.shape == plane.shape and np.isfinite(out).all()
    # the same weights without the filters give another output: the checkpoint's whitening is used
    ckpt["whiten"] = None
    checkpoints.save(tmp_path / "plain.pt", {k: v for k, v in ckpt.items() if k != "sha256"})
    denoise(tmp_path / "plain.pt", tmp_path / "in.tif", tmp_path / "plain.tif", DenoiseConfig(device="cpu"))
    assert np.abs(tifffile.imread(tmp_path / "plain.tif") - out).max() > 0.01  # (2 iterations: near constant)
    assert main(["ingest", str(tmp_path / "in.tif"), str(tmp_path / "in.zarr")]) == 0
    denoise(tmp_path / "m.pt", tmp_path / "in.zarr", tmp_path / "out.zarr", DenoiseConfig(device="cpu", block_size=128))
    streamed = omezarr.open_image(tmp_path / "out.zarr")[...].reshape(plane.shape)
    np.testing.assert_allclose(streamed, out, atol=0.5)
    assert omezarr.read_attrs(tmp_path / "out.zarr")["whiten"] == checkpoints.load(tmp_path / "m.pt")["whiten"]
    with pytest.raises(InputError, match="whitened"):
        denoise(tmp_path / "m.pt", tmp_path / "in.tif", tmp_path / "o2.tif", sr=tmp_path / "sr.tif")
    ckpt["whiten"] = [[1.0, 0.2], [0.2, 1.0]]  # damaged: an even kernel
    checkpoints.save(tmp_path / "bad.pt", {k: v for k, v in ckpt.items() if k != "sha256"})
    with pytest.raises(InputError, match="damaged or foreign checkpoint: whitening kernel"):
        denoise(tmp_path / "bad.pt", tmp_path / "in.tif", tmp_path / "o3.tif")
    assert not (tmp_path / "o3.tif").exists()


def test_cli_takes_whiten_as_a_word_or_a_switch(tmp_path):
    plane = np.clip(noisy(0.3)[:128, :128], 0, 255).astype(np.float32)
    tifffile.imwrite(tmp_path / "in.tif", plane)
    common = ["train", str(tmp_path / "in.tif"), "--iterations", "1", "--batch-size", "1", "--patch-size", "32",
              "--val-fraction", "0", "--device", "cpu", "--features", "8", "--final-features", "8"]
    assert main([*common, "--out", str(tmp_path / "a.pt"), "--no-whiten"]) == 0
    assert checkpoints.load(tmp_path / "a.pt")["whiten"] is None
    assert main([*common, "--out", str(tmp_path / "b.pt"), "--whiten", "auto"]) == 0
    assert checkpoints.load(tmp_path / "b.pt")["whiten"] is not None


def test_train_and_denoise_jobs_import_scipy_signal_only_to_whiten():
    """scipy.signal costs about 1 s per process and only the whitening filter uses it
    (`n2sr.nn.whiten.apply`), so white-noise train and denoise jobs must not load it."""
    code = ("import sys, n2sr.steps.train, n2sr.steps.denoise; assert 'scipy.signal' not in sys.modules; "
            "import numpy as np; from n2sr.nn.whiten import apply; apply(np.ones((8, 8)), np.ones((3, 3)) / 9); "
            "assert 'scipy.signal' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
