"""N2SRNet: shapes for any size, weight sharing, parameter counts, receptive field, fast path."""

from __future__ import annotations

import os

import pytest
import torch

from n2sr.nn.device import available_cpus
from n2sr.nn.inference import prepare
from n2sr.config import MULTIPLE, ModelConfig
from n2sr.nn.model import UNet, build_model, pad_to_multiple, receptive_field

CONFIGS = [ModelConfig(variant=v, shared_weights=s) for v in ("code", "paper") for s in (True, False)]


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def narrow(variant: str) -> torch.nn.Module:
    """A 4-channel net: same layer graph (hence same receptive field), cheap to run in float64."""
    cfg = ModelConfig(variant=variant, features=4, final_features=4, unet_out_channels=4, sr_channels=4)
    return build_model(cfg).double().eval()


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.variant}-{'shared' if c.shared_weights else 'separate'}")
@pytest.mark.parametrize("hw", [(37, 50), (64, 64), (1, 3), (2, 1), (33, 32)])
def test_output_is_twice_the_input_size(cfg: ModelConfig, hw: tuple[int, int]) -> None:
    model = build_model(cfg).eval()
    with torch.inference_mode():
        y = model(torch.rand(2, 1, *hw))
    assert y.shape == (2, 1, 2 * hw[0], 2 * hw[1])
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


def test_unet_alone_keeps_the_size() -> None:
    net = UNet(in_ch=1, out_ch=1).eval()
    with torch.inference_mode():
        assert net(torch.rand(1, 1, 45, 70)).shape == (1, 1, 45, 70)


def test_padding_is_bottom_right_only() -> None:
    x = torch.rand(1, 1, 40, 70)
    p = pad_to_multiple(x)
    assert p.shape == (1, 1, 64, 96)
    assert torch.equal(p[..., :40, :70], x)
    small = pad_to_multiple(torch.rand(1, 1, 3, 5))  # too small to reflect
    assert small.shape == (1, 1, MULTIPLE, MULTIPLE)


def test_variant_defaults_resolve_to_numbers() -> None:
    assert ModelConfig().unet_out_channels == 64
    assert ModelConfig(variant="paper").unet_out_channels == 256
    assert ModelConfig(variant="paper", unet_out_channels=32).unet_out_channels == 32
    with pytest.raises(ValueError, match="variant"):
        ModelConfig(variant="other")  # type: ignore[arg-type]


def test_shared_weights_are_one_module() -> None:
    shared = build_model(ModelConfig(shared_weights=True)).unet
    separate = build_model(ModelConfig(shared_weights=False)).unet
    assert len({id(b) for b in shared.down}) == 1 and len({id(b) for b in shared.up}) == 1
    assert len({id(b) for b in separate.down}) == 4 and len({id(b) for b in separate.up}) == 3
    # each shared block's parameters are counted once: 3 fewer encoder and 2 fewer decoder blocks
    enc = n_params(shared.down[0])
    dec = n_params(shared.up[0])
    assert n_params(separate) - n_params(shared) == 3 * enc + 2 * dec


def test_parameter_counts() -> None:
    # code variant, shared: U-Net 956,576 (head 21,264; shared enc 20,784; bottom 41,568;
    # first decoder 249,120; shared decoder 290,592; tail 333,248) + SR head 156,097.
    assert n_params(build_model(ModelConfig())) == 1_112_673
    assert n_params(build_model(ModelConfig(shared_weights=False))) == 1_756_209
    assert n_params(build_model(ModelConfig(variant="paper"))) == 1_329_697
    assert n_params(build_model(ModelConfig(variant="paper", shared_weights=False))) == 1_973_233


def test_receptive_field_value() -> None:
    assert receptive_field(ModelConfig()) == 190
    assert receptive_field(ModelConfig(variant="paper")) == 190


def influence(model: torch.nn.Module, x: torch.Tensor, col: int) -> tuple[int, int]:
    """Offsets (min, max) of q // 2 - col over the output columns q changed by perturbing column `col`."""
    with torch.no_grad():
        y0 = model(x)
        x1 = x.clone()
        x1[..., col] += 1000.0
        diff = (model(x1) - y0).abs().amax(dim=(0, 1, 2))
    q = torch.nonzero(diff > 1e-9 * y0.abs().max()).flatten() // 2
    return int(q.min()) - col, int(q.max()) - col


@pytest.mark.parametrize("variant", ["code", "paper"])
def test_receptive_field_is_tight_with_positive_weights(variant: str) -> None:
    """With positive weights every ReLU passes and the perturbed pixel wins every max-pool,
    so the measured reach equals the analytic one over the 32 grid alignments."""
    torch.manual_seed(1)
    model = narrow(variant)
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    x = torch.rand(1, 1, MULTIPLE, 16 * MULTIPLE, dtype=torch.float64)
    reach = [influence(model, x, col) for col in range(8 * MULTIPLE, 9 * MULTIPLE)]
    assert max(max(-lo, hi) for lo, hi in reach) == receptive_field(ModelConfig(variant=variant))


def test_perturbation_beyond_receptive_field_has_no_effect() -> None:
    """Random weights: a pixel just outside the reach changes nothing, a neighbour does."""
    model = narrow("code")
    rf = receptive_field(ModelConfig())
    x = torch.rand(1, 1, MULTIPLE, 14 * MULTIPLE, dtype=torch.float64)
    row, col = 16, 7 * MULTIPLE
    q = slice(2 * col, 2 * col + 2)  # the two output columns over input column `col`
    with torch.no_grad():
        y0 = model(x)[..., q]
        for offset, changes in ((rf + 1, False), (-(rf + 1), False), (1, True), (-1, True)):
            x1 = x.clone()
            x1[0, 0, row, col + offset] += 10.0
            changed = not torch.allclose(model(x1)[..., q], y0, rtol=0, atol=1e-12)
            assert changed == changes, f"offset {offset}"


@pytest.mark.parametrize("precision, tol", [("fp32", 1e-4), ("bf16", 5e-2)])
@pytest.mark.parametrize("variant", ["code", "paper"])
def test_prepared_inference_matches_eager(precision: str, tol: float, variant: str) -> None:
    model = build_model(ModelConfig(variant=variant)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 1, 37, 50)
    with torch.inference_mode():
        ref = model(x)
    fast = prepare(model, torch.device("cpu"), precision, compile=False)
    y = fast(x)
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert (y - ref).abs().max() <= tol * ref.abs().max()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # caller's model untouched
    assert next(model.parameters()).dtype == torch.float32


def test_prepared_unet_keeps_the_size() -> None:
    fast = prepare(UNet(1, 1), torch.device("cpu"), "bf16", compile=False)
    assert fast(torch.rand(1, 1, 45, 70)).shape == (1, 1, 45, 70)


def test_thread_count_follows_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert available_cpus() == 1
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)
