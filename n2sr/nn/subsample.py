"""The Noise2SR sub-sampler (paper Sec. 2.2).

Each 2x2 cell of the image contributes one randomly chosen pixel to the half-size input
``y_J``; the other three pixels are the training target ``y_Jc``. Because the noise is
pixel-wise independent, the target's noise is independent of the input, which is what
makes the complement-only L2 loss an unbiased proxy for the supervised one (Theorem 1).

The authors' code draws from a pool of 2^20 pre-computed permutations and so caps the
number of cells per batch; this version draws one ``randint(0, 4)`` per cell, which is the
same distribution without the cap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def subsample(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a batch into the sub-sampled input and the complement mask.

    Parameters
    ----------
    x : Tensor (N, C, H, W)
        Noisy images. Odd H or W: the last row/column belongs to no complete cell, so it is
        neither sampled nor part of the target (its mask is 0).
    generator : torch.Generator, optional
        Source of the random cell positions; it must live on ``x.device``.

    Returns
    -------
    y_j : Tensor (N, C, H//2, W//2)
        One pixel per 2x2 cell, chosen independently per sample, channel and cell.
    mask : Tensor (N, C, H, W), dtype of ``x``
        1 on the three complement pixels of each cell, 0 on the chosen pixel (and on the
        odd trailing row/column).
    """
    if x.ndim != 4:
        raise ValueError(f"subsample expects (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    if h2 == 0 or w2 == 0:
        raise ValueError(f"subsample needs at least 2x2 pixels, got {h}x{w}")
    cells = F.pixel_unshuffle(x[:, :, : 2 * h2, : 2 * w2], 2).view(n, c, 4, h2, w2)
    choice = torch.randint(0, 4, (n, c, 1, h2, w2), generator=generator, device=x.device)
    y_j = torch.gather(cells, 2, choice).squeeze(2)
    picked = torch.zeros_like(cells).scatter_(2, choice, 1.0)
    mask = F.pixel_shuffle((1.0 - picked).view(n, c * 4, h2, w2), 2)
    if (h, w) != (2 * h2, 2 * w2):
        mask = F.pad(mask, (0, w - 2 * w2, 0, h - 2 * h2))
    return y_j, mask


def complement_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the complement pixels only (paper Eq. 3).

    The authors' code takes ``MSELoss()(pred * mask, y * mask)``, a mean over all pixels,
    which is this value times 3/4: the same minimiser, a different learning-rate scale.
    Here the mean is over the masked pixels, so the loss is the per-pixel error the
    theorem talks about and does not change with the mask density.
    """
    diff = (prediction.float() - target.float()) * mask
    return diff.pow(2).sum() / mask.sum().clamp_min(1.0)
