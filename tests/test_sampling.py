"""Training crops drawn on the device (`n2sr.nn.sampling`): uniform over every valid position of
every plane, never into the padding of a smaller plane, augmentation = rot90 then flip, and
no host sync in the training loop's step."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from n2sr.config import ModelConfig, TrainConfig
from n2sr.nn.sampling import PlaneBank
from n2sr.nn.training import fit

P = 4


def _coded_planes(shapes):
    """Planes whose pixels encode (plane, y, x), so a crop says where it came from: value =
    plane * 10^6 + y * 10^3 + x + 1 (0 is padding)."""
    out = []
    for n, (h, w) in enumerate(shapes):
        y, x = np.mgrid[:h, :w]
        out.append((n * 10**6 + y * 10**3 + x + 1).astype(np.float64)[None])
    return out


def _origins(crops):
    """(plane, y0, x0) of each un-augmented crop from its top-left pixel."""
    v = crops[:, 0, 0, 0].double() - 1
    return (v // 10**6).long(), (v % 10**6 // 10**3).long(), (v % 10**3).long()


def test_bank_pads_planes_of_different_sizes_and_keeps_their_sizes():
    bank = PlaneBank.from_planes([np.ones((5, 7)), np.ones((1, 9, 6))], "cpu")
    assert bank.data.shape == (2, 1, 9, 7) and bank.data.dtype == torch.float32
    assert bank.sizes.tolist() == [[5, 7], [9, 6]]
    assert bank.data[0, 0, 5:].abs().sum() == 0 and bank.data[1, 0, :, 6:].abs().sum() == 0
    with pytest.raises(ValueError, match="channels"):
        PlaneBank.from_planes([np.ones((2, 5, 5)), np.ones((1, 5, 5))], "cpu")


def test_crops_cover_every_valid_offset_of_every_plane_uniformly_and_never_the_padding():
    shapes = [(6, 9), (12, 5), (4, 4)]  # valid offsets: 3x6, 9x2, 1x1
    bank = PlaneBank.from_planes(_coded_planes(shapes), "cpu")
    gen = torch.Generator().manual_seed(0)
    crops = torch.cat([bank.sample(64, P, gen) for _ in range(200)])  # 12800 crops
    assert crops.shape == (12800, 1, P, P)
    assert (crops > 0).all()  # no padding pixel in any crop
    plane, y0, x0 = _origins(crops)
    # each crop is the contiguous window at its origin
    expect = (plane * 10**6 + y0 * 10**3 + x0 + 1).double().view(-1, 1, 1, 1)
    ar = torch.arange(P, dtype=torch.float64)
    assert torch.equal(crops.double(), expect + (ar.view(-1, 1) * 10**3 + ar).view(1, 1, P, P))
    counts = torch.bincount(plane, minlength=3)
    assert (counts > 12800 / 3 * 0.9).all()  # every plane drawn, about equally often
    for n, (h, w) in enumerate(shapes):
        ys, xs = y0[plane == n], x0[plane == n]
        assert ys.min() == 0 and ys.max() == h - P and xs.min() == 0 and xs.max() == w - P
        cells = torch.bincount(ys * (w - P + 1) + xs, minlength=(h - P + 1) * (w - P + 1)).double()
        assert len(cells) == (h - P + 1) * (w - P + 1) and (cells > 0).all()
        # chi-square against the uniform distribution over the valid offsets (loose: p ~ 1e-6)
        expected = cells.sum() / len(cells)
        chi2 = ((cells - expected) ** 2 / expected).sum().item()
        dof = len(cells) - 1
        assert chi2 < dof + 7 * np.sqrt(2 * max(dof, 1)) + 10, (n, chi2, dof)


def test_augmented_crops_are_the_8_symmetries_of_the_window():
    """The same draw with and without augmentation: the same window, turned and flipped; all 8 occur."""
    bank = PlaneBank.from_planes(_coded_planes([(10, 11), (7, 8)]), "cpu")
    plain = bank.sample(512, P, torch.Generator().manual_seed(5))
    aug = bank.sample(512, P, torch.Generator().manual_seed(5), augment=True)
    assert (aug > 0).all()
    seen = set()
    for a, b in zip(plain, aug):
        variants = [torch.flip(torch.rot90(a, k, (1, 2)), (2,)) if f else torch.rot90(a, k, (1, 2))
                    for k in range(4) for f in range(2)]
        hits = [i for i, v in enumerate(variants) if torch.equal(v, b)]
        assert len(hits) == 1
        seen.add(hits[0])
    assert seen == set(range(8))


def test_multi_channel_planes_keep_their_channels_together():
    planes = [np.stack([p[0], -p[0]]) for p in _coded_planes([(9, 9), (6, 10)])]
    crops = PlaneBank.from_planes(planes, "cpu").sample(32, P, torch.Generator().manual_seed(1), augment=True)
    assert crops.shape == (32, 2, P, P) and torch.equal(crops[:, 1], -crops[:, 0])


@pytest.mark.parametrize("augment", [False, True])
def test_training_loop_reads_the_loss_only_at_validation_points(monkeypatch, augment):
    """Host reads of tensors (item, float, int, tolist) made by the training module itself: one per
    curve row. (Adam's own reads of its CPU step counters are no device sync and are not counted.)"""
    reads = []

    def spy(name):
        real = getattr(torch.Tensor, name)

        def wrapped(self, *args):
            if sys._getframe(1).f_globals.get("__name__", "").startswith(("n2sr.nn.training", "n2sr.nn.sampling")):
                reads.append(name)
            return real(self, *args)
        monkeypatch.setattr(torch.Tensor, name, wrapped)

    cfg = TrainConfig(iterations=6, val_every=3, checkpoint_every=100, batch_size=2, patch_size=16, val_fraction=0,
                      augment=augment, precision="fp32", device="cpu", model=ModelConfig(features=8))
    rng = np.random.default_rng(0)
    planes = [rng.random((24, 40)).astype(np.float32), rng.random((32, 20)).astype(np.float32)]
    for name in ("item", "tolist", "__float__", "__int__", "__index__", "__bool__"):
        spy(name)
    result = fit(planes, cfg, progress=False)
    assert result.steps == 6 and [r["step"] for r in result.curve] == [3, 6]
    assert reads == ["item", "item"]  # one read per curve row, none per step


def test_resume_mid_interval_with_augmentation_and_mixed_sizes_equals_uninterrupted():
    """A state taken between two curve rows (checkpoint_every 2, val_every 3) continues exactly:
    the sampling generator and the device-side running loss are both in it."""
    rng = np.random.default_rng(2)
    planes = [rng.poisson(50, size=s).astype(np.uint16) for s in ((40, 56), (64, 48), (48, 48))]
    cfg = TrainConfig(iterations=7, val_every=3, checkpoint_every=2, batch_size=2, patch_size=16, val_fraction=0,
                      augment=True, precision="fp32", device="cpu", model=ModelConfig(features=8))
    states = {}
    full = fit(planes, cfg, on_state=lambda s: states.setdefault(s["step"], copy.deepcopy(s)), progress=False)
    resumed = fit(planes, cfg, resume=states[4], progress=False)
    assert [r["step"] for r in resumed.curve] == [3, 6, 7]
    assert [r["train_loss"] for r in resumed.curve] == [r["train_loss"] for r in full.curve]
    for k, v in full.best_state.items():
        assert torch.equal(v, resumed.best_state[k]), k
