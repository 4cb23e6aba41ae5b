import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from n2sr.nn.subsample import complement_mse, subsample


def _cells(t: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 4, H/2, W/2): the four pixels of each 2x2 cell."""
    n, c, h, w = t.shape
    return F.pixel_unshuffle(t, 2).view(n, c, 4, h // 2, w // 2)


def test_one_pixel_per_cell_with_matching_value():
    x = torch.rand(3, 2, 16, 24)
    y_j, mask = subsample(x, torch.Generator().manual_seed(1))
    assert y_j.shape == (3, 2, 8, 12) and mask.shape == x.shape
    cells_mask = _cells(mask)
    assert torch.all(cells_mask.sum(2) == 3), "exactly three complement pixels per cell"
    picked = (cells_mask == 0).float().argmax(2, keepdim=True)
    assert torch.equal(torch.gather(_cells(x), 2, picked).squeeze(2), y_j)


def test_positions_are_uniform():
    x = torch.zeros(4, 1, 512, 512)
    _, mask = subsample(x, torch.Generator().manual_seed(7))
    counts = (_cells(mask) == 0).sum(dim=(0, 1, 3, 4)).numpy()
    assert counts.sum() == 4 * 256 * 256
    # chi-square goodness of fit against 1/4 each; the seed makes it deterministic
    assert stats.chisquare(counts).pvalue > 1e-3
    # and samples are drawn independently of each other
    m = (_cells(mask) == 0).float().argmax(2)
    assert (m[0] == m[1]).float().mean() == pytest.approx(0.25, abs=0.01)


def test_seeded_and_no_cell_cap():
    x = torch.rand(1, 1, 2050, 2050)  # 1,050,625 cells > the official code's 2**20 cap
    a = subsample(x, torch.Generator().manual_seed(3))
    b = subsample(x, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (1, 1, 1025, 1025)


def test_odd_sizes_leave_the_trailing_row_and_column_out():
    x = torch.rand(2, 1, 7, 9)
    y_j, mask = subsample(x, torch.Generator().manual_seed(0))
    assert y_j.shape == (2, 1, 3, 4)
    assert torch.all(mask[..., 6, :] == 0) and torch.all(mask[..., :, 8] == 0)
    assert torch.all(_cells(mask[..., :6, :8]).sum(2) == 3)


def test_loss_gradient_is_zero_at_subsampled_positions():
    x = torch.rand(2, 1, 8, 8)
    _, mask = subsample(x, torch.Generator().manual_seed(5))
    target = x.clone().requires_grad_(True)
    pred = torch.rand(2, 1, 8, 8)
    complement_mse(pred, target, mask).backward()
    grad = target.grad
    assert torch.all(grad[mask == 0] == 0)
    assert torch.all(grad[mask == 1] != 0)


def test_loss_is_the_mean_over_complement_pixels():
    pred, target = torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6)
    _, mask = subsample(target, torch.Generator().manual_seed(2))
    expected = ((pred - target)[mask == 1] ** 2).mean()
    assert complement_mse(pred, target, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    # the official MSELoss(pred*mask, y*mask) is 3/4 of it
    official = F.mse_loss(pred * mask, target * mask)
    assert official.item() == pytest.approx(0.75 * expected.item(), rel=1e-5)


def test_rejects_wrong_rank():
    with pytest.raises(ValueError, match="N, C, H, W"):
        subsample(torch.rand(8, 8))
