"""Training crops drawn on the training device: no host work and no host sync per batch.

The normalised training planes are moved to the device once, as one zero-padded tensor
``(N, C, Hmax, Wmax)`` with each plane's valid ``(H, W)``, so planes of different sizes share
one tensor. A batch is then a handful of kernels: one ``randint`` draws every crop's plane,
offsets, rotation and flip from one device generator, and one advanced-indexing gather cuts
the crops (already rotated and flipped) out of the padded tensor.

Distribution: the plane is uniform over the planes; the offset is uniform over every valid
position of that plane (``0 .. H - P`` and ``0 .. W - P``), so a crop never reaches into the
padding; with ``augment`` the rotation is uniform over the four 90-degree turns and the
horizontal flip is a fair coin, applied after the turn (``flip(rot90(crop, k), W)``), which
covers the 8 symmetries of the square once each. Uniform integers below ``n`` are 62-bit
random integers modulo ``n``: the bias is below ``n / 2^62``, far under anything a training
run can see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

_RANDOM_BITS = 2**62


@dataclass(frozen=True)
class PlaneBank:
    """Training planes resident on one device.

    data : Tensor (N, C, Hmax, Wmax), float32; zero outside each plane's valid region.
    sizes : Tensor (N, 2), int64; each plane's valid (H, W), on the same device.
    """

    data: torch.Tensor
    sizes: torch.Tensor

    @classmethod
    def from_planes(cls, planes: Sequence[np.ndarray | torch.Tensor], device: torch.device | str) -> "PlaneBank":
        """``(C, Y, X)`` or ``(Y, X)`` planes (equal C, any Y and X) -> one padded tensor on `device`."""
        if not planes:
            raise ValueError("no planes to sample from")
        tensors = [torch.as_tensor(np.ascontiguousarray(p) if isinstance(p, np.ndarray) else p, dtype=torch.float32)
                   for p in planes]
        tensors = [t.reshape(-1, *t.shape[-2:]) for t in tensors]
        if len({t.shape[0] for t in tensors}) != 1:
            raise ValueError(f"planes differ in channels: {sorted({t.shape[0] for t in tensors})}")
        h = max(t.shape[-2] for t in tensors)
        w = max(t.shape[-1] for t in tensors)
        data = torch.zeros(len(tensors), tensors[0].shape[0], h, w, dtype=torch.float32)
        for i, t in enumerate(tensors):
            data[i, :, : t.shape[-2], : t.shape[-1]] = t
        sizes = torch.tensor([t.shape[-2:] for t in tensors], dtype=torch.int64)
        return cls(data.to(device), sizes.to(device))

    @property
    def device(self) -> torch.device:
        return self.data.device

    def sample(self, batch: int, patch: int, gen: torch.Generator, augment: bool = False) -> torch.Tensor:
        """`batch` random ``patch x patch`` crops, ``(batch, C, patch, patch)``, on the bank's device.

        Every plane must be at least `patch` in both axes (`n2sr.nn.training.check_planes`);
        `gen` must live on the bank's device. No value is read back to the host.
        """
        dev = self.device
        draws = torch.randint(_RANDOM_BITS, (batch, 5), generator=gen, device=dev)
        n = self.data.shape[0]
        idx = draws[:, 0] % n
        room = self.sizes[idx] - (patch - 1)  # valid offsets per axis: 0 .. H - P
        y0 = draws[:, 1] % room[:, 0]
        x0 = draws[:, 2] % room[:, 1]
        ar = torch.arange(patch, device=dev)
        i, j = ar.view(1, patch, 1), ar.view(1, 1, patch)  # output position in the crop
        if augment:
            k = (draws[:, 3] % 4).view(-1, 1, 1)
            flip = (draws[:, 4] % 2).view(-1, 1, 1).bool()
            last = patch - 1
            j = torch.where(flip, last - j, j)  # the flip is applied last, so it is undone first
            # source of out[i, j] in rot90(crop, k, (H, W)): k=1 -> (j, P-1-i), k=2 -> (P-1-i, P-1-j),
            # k=3 -> (P-1-j, i)
            rows = torch.where(k == 0, i, torch.where(k == 1, j, torch.where(k == 2, last - i, last - j)))
            cols = torch.where(k == 0, j, torch.where(k == 1, last - i, torch.where(k == 2, last - j, i)))
        else:
            rows, cols = i.expand(batch, patch, 1), j.expand(batch, 1, patch)
        rows = rows + y0.view(-1, 1, 1)
        cols = cols + x0.view(-1, 1, 1)
        channels = torch.arange(self.data.shape[1], device=dev).view(1, -1, 1, 1)
        return self.data[idx.view(-1, 1, 1, 1), channels, rows.unsqueeze(1), cols.unsqueeze(1)]
