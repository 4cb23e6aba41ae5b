"""Blind-spot masking for the Noise2Void and Noise2Self baselines (pure tensors, no I/O).

Both methods train a plain U-Net to predict pixels whose noisy value it was not shown: the
input has those pixels replaced, the loss is taken on them only. Since the noise is pixel-wise
independent, the replaced pixel's own noise cannot be predicted from the rest, so the loss is
the supervised loss plus the noise variance (the same argument as Noise2SR's Theorem 1).

The guarantee is exact here: a prediction at a masked pixel never depends on that pixel's
noisy value, also not through a *neighbouring* masked pixel's replacement (tested by gradient).

- `n2v_mask` (Krull et al., CVPR 2019): stratified random pixels, one per ``box x box`` cell
  (default 10: about 1% of each patch), each replaced by a random pixel of its
  ``(2 radius + 1)^2`` neighbourhood other than itself (default radius 2: 5x5). Masked pixels
  are kept at least ``radius + 1`` apart, so a replacement never copies another masked pixel.
- `n2s_mask` (Batson & Royer, ICML 2019): a J-invariant grid, one random phase of a
  ``grid x grid`` lattice per sample (default 4: 1/16 of the pixels), each masked pixel replaced
  by the weighted mean of its eight neighbours ("donut" interpolation, the authors' ``interp``
  mode); on a stride >= 3 grid no neighbour is itself masked.

The published settings are the defaults of `n2sr.config.N2VConfig` and `N2SConfig`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_DONUT = torch.tensor([[0.5, 1.0, 0.5], [1.0, 0.0, 1.0], [0.5, 1.0, 0.5]]) / 6.0


def n2v_mask(x: torch.Tensor, generator: torch.Generator | None = None, *, box: int,
             radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise2Void input and loss mask for a batch.

    Parameters
    ----------
    x : Tensor (N, C, H, W), H and W >= 2 * radius
    generator : torch.Generator on ``x.device``, the only source of randomness.
    box : one blind spot per ``box x box`` cell of a grid shifted randomly per sample; its
        offset is drawn from ``[0, box - radius)`` so blind spots are > radius apart.
    radius : replacements are drawn from the ``(2 radius + 1)^2 - 1`` neighbours; one that
        falls outside the image is mirrored through the blind spot (offset negated), which
        never yields the blind spot itself.

    Returns
    -------
    inp : Tensor (N, C, H, W), `x` with every blind spot replaced by a neighbour's value.
    mask : Tensor (N, C, H, W), dtype of `x`: 1 at blind spots, 0 elsewhere.
    """
    if radius < 1:
        raise ValueError(f"radius must be >= 1 so a blind spot has neighbours to copy, got {radius}")
    n, c, h, w = _check(x, 2 * radius)
    if box <= radius + 1:
        raise ValueError(f"box ({box}) must exceed radius + 1 ({radius + 1}) to keep blind spots apart")
    dev = x.device
    cells_y, cells_x = -(-h // box) + 1, -(-w // box) + 1
    shift = torch.randint(0, box, (n, c, 2, 1, 1), generator=generator, device=dev)
    offset = torch.randint(0, box - radius, (n, c, 2, cells_y, cells_x), generator=generator, device=dev)
    ys = torch.arange(cells_y, device=dev)[:, None] * box + offset[:, :, 0] - shift[:, :, 0]
    xs = torch.arange(cells_x, device=dev)[None, :] * box + offset[:, :, 1] - shift[:, :, 1]
    side = 2 * radius + 1
    pick = torch.randint(0, side * side - 1, (n, c, cells_y, cells_x), generator=generator, device=dev)
    pick = pick + (pick >= side * side // 2)  # skip the centre
    dy, dx = pick // side - radius, pick % side - radius
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    bi, ci = torch.meshgrid(torch.arange(n, device=dev), torch.arange(c, device=dev), indexing="ij")
    bi = bi[:, :, None, None].expand_as(ys)[keep]
    ci = ci[:, :, None, None].expand_as(ys)[keep]
    ys, xs, dy, dx = ys[keep], xs[keep], dy[keep], dx[keep]
    sy = torch.where((ys + dy < 0) | (ys + dy >= h), ys - dy, ys + dy)
    sx = torch.where((xs + dx < 0) | (xs + dx >= w), xs - dx, xs + dx)
    inp = x.clone()
    inp[bi, ci, ys, xs] = x[bi, ci, sy, sx]
    mask = torch.zeros_like(x)
    mask[bi, ci, ys, xs] = 1.0
    return inp, mask


def n2s_mask(x: torch.Tensor, generator: torch.Generator | None = None, *,
             grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise2Self input and loss mask: one random phase of a ``grid x grid`` lattice per sample.

    Parameters
    ----------
    x : Tensor (N, C, H, W), H and W >= 2
    generator : torch.Generator on ``x.device``.
    grid : lattice stride (>= 3, so that no masked pixel neighbours another).

    Returns
    -------
    inp : Tensor (N, C, H, W), `x` with the masked pixels replaced by the donut mean of their
        eight neighbours (mirrored at the border).
    mask : Tensor (N, C, H, W), dtype of `x`: 1 on the lattice phase, 0 elsewhere.
    """
    n, c, h, w = _check(x, 2)
    if grid < 3:
        raise ValueError(f"grid must be >= 3 so masked pixels have unmasked neighbours, got {grid}")
    phase = torch.randint(0, grid, (n, 2, 1, 1), generator=generator, device=x.device)
    rows = torch.arange(h, device=x.device)[:, None] % grid == phase[:, 0]
    cols = torch.arange(w, device=x.device)[None, :] % grid == phase[:, 1]
    mask = (rows & cols)[:, None].expand(n, c, h, w).to(x.dtype)
    kernel = _DONUT.to(x.device, x.dtype).expand(c, 1, 3, 3)
    interp = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=c)
    return torch.where(mask.bool(), interp, x), mask


def _check(x: torch.Tensor, minimum: int) -> tuple[int, int, int, int]:
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < minimum:
        raise ValueError(f"patches of {x.shape[-2]}x{x.shape[-1]} are too small for blind-spot masking; "
                         f"need at least {minimum}x{minimum}")
    return tuple(x.shape)  # type: ignore[return-value]
