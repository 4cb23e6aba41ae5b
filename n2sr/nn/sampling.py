"""Training crops drawn on the training device: no host work and no host sync per batch.

The normalised training planes are moved to the device once, as one zero-padded tensor
``(N, C, Hmax, Wmax)`` with each plane's valid ``(H, W)``, so planes of different sizes share
one tensor. A batch is then a handful of kernels: one ``randint`` draws every crop's plane,
offsets and symmetry from one device generator, one advanced-indexing gather on the
``unfold`` view of all windows cuts the crops out of the padded tensor, and (with
``augment``) three ``where``s turn and flip them.

Distribution: the plane is uniform over the planes; the offset is uniform over every valid
position of that plane (``0 .. H - P`` and ``0 .. W - P``), so a crop never reaches into the
padding; with ``augment`` the crop is one of the 8 symmetries of the square (the four
90-degree turns, each with or without a flip), each with probability 1/8, drawn as three fair
bits: transpose, flip Y, flip X. Uniform integers below ``n`` are 62-bit random integers
modulo ``n``: the bias is below ``n / 2^62``, far under anything a training run can see.
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
        draws = torch.randint(_RANDOM_BITS, (batch, 4), generator=gen, device=dev)
        idx = draws[:, 0] % self.data.shape[0]
        room = self.sizes[idx] - (patch - 1)  # valid offsets per axis: 0 .. H - P
        y0 = draws[:, 1] % room[:, 0]
        x0 = draws[:, 2] % room[:, 1]
        # every patch x patch window as a view (N, C, Hmax-P+1, Wmax-P+1, P, P); one gather cuts the crops
        windows = self.data.unfold(2, patch, 1).unfold(3, patch, 1)
        crops = windows[idx, :, y0, x0]  # (batch, C, P, P)
        if not augment:
            return crops
        # one of the 8 symmetries of the square: optional transpose, then optional flips of Y and X
        sym = (draws[:, 3] % 8).view(-1, 1, 1, 1)
        crops = torch.where(sym % 2 == 1, crops.transpose(-1, -2), crops)
        crops = torch.where(sym // 2 % 2 == 1, crops.flip(-2), crops)
        return torch.where(sym // 4 == 1, crops.flip(-1), crops)
