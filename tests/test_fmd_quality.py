"""A short CPU training on one real noisy FMD frame must clearly beat the noisy frame.

Measured: 200 iterations of batch 4, 64x64 crops, lr 1e-3 raise PSNR on Confocal_BPAE_B FOV 1
capture 0 from 33.27 to 39.25 dB (fixed range 255) and SSIM from 0.843 to 0.968; the thresholds
below keep about 3 dB and 0.06 of headroom. About 15 s on 2 cores with native bf16, 70 s on one
fp32 core (under `-n 2`, tests/conftest.py). 100 iterations gain only 3.8 dB, and the narrow test
network (features 8) loses PSNR at 200, so neither buys the time back.
"""

import pytest
import torch

from n2sr.io import checkpoints
from n2sr.io import images
from n2sr.config import DenoiseConfig, TrainConfig
from n2sr.nn.inference import Engine
from n2sr.nn.normalize import Normalizer
from n2sr.metrics import evaluate_pair
from n2sr.nn.model import receptive_field
from n2sr.nn.model import from_state
from n2sr.steps.train import train_planes


@pytest.mark.data
def test_short_training_on_one_fmd_frame_raises_psnr(fmd_root, tmp_path):
    noisy = images.read_image(fmd_root / "Confocal_BPAE_B" / "raw" / "1" / "HV110_P0500510000.png")
    ref = images.read_image(fmd_root / "Confocal_BPAE_B" / "gt" / "1" / "avg50.png")
    cfg = TrainConfig(iterations=200, batch_size=4, patch_size=64, lr=1e-3, val_every=50, checkpoint_every=200)
    train_planes([noisy], tmp_path / "m.pt", cfg, progress=False)
    ckpt = checkpoints.load(tmp_path / "m.pt")
    net = from_state(ckpt["model_config"], ckpt["scale"], ckpt["model"])
    engine = Engine(net, DenoiseConfig(), scale=2, receptive_field=receptive_field(cfg.model),
                    normalizer=Normalizer.from_dict(ckpt["normalizer"]))
    denoised, _ = engine.denoise_plane(noisy)
    before = evaluate_pair(ref, noisy, fixed_data_range=255)
    after = evaluate_pair(ref, denoised, fixed_data_range=255)
    assert after["psnr"] - before["psnr"] > 3.0, (before, after)
    assert after["ssim"] - before["ssim"] > 0.06, (before, after)
    assert after["psnr_per_image"] - before["psnr_per_image"] > 3.0
