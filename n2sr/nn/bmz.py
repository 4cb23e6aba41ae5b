"""A trained model as one self-contained network, raw image in, denoised image out, for the
BioImage Model Zoo (`n2sr.steps.export`).

deepImageJ, ilastik and napari run a package's TorchScript weights and nothing else of n2sr, so
everything `n2sr denoise` does around the network goes inside: the checkpoint's normalisation,
the network, the 2x output brought back to the input grid (Noise2SR only) and the
normalisation undone. Scripted, not traced: the sizes are read at run time, so one file serves
every input size the package declares (multiples of `n2sr.config.MULTIPLE`).

What it leaves out of the engine: tiling (consumers tile with their own settings; a plane the
engine would denoise in one tile, up to ``CPU_TILE`` on the CPU, gives the same numbers within
float rounding), the self-ensemble and bf16 weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from n2sr.nn.downsample import halve
from n2sr.nn.normalize import Normalizer


class Packaged(nn.Module):
    """``(N, 1, H, W)`` raw float32 -> ``(N, 1, H, W)`` denoised float32, as `n2sr.nn.inference.Engine`.

    `net` is the checkpoint's network (`n2sr.nn.model.from_state`); `scale` 2 brings its 2x
    output back with `downsample` (``avgpool`` or ``bilinear``, the engine's two modes).
    """

    def __init__(self, net: nn.Module, scale: int, normalizer: Normalizer, downsample: str = "avgpool") -> None:
        super().__init__()
        if scale not in (1, 2):
            raise ValueError(f"scale must be 1 (same-size U-Net) or 2 (Noise2SR), got {scale}")
        if downsample not in ("avgpool", "bilinear"):
            raise ValueError(f"downsample must be 'avgpool' or 'bilinear', got {downsample!r}")
        self.net = net.eval()
        self.sr = scale == 2
        self.bilinear = downsample == "bilinear"
        self.offset = float(normalizer.offset)
        self.scale = float(normalizer.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        y = self.net((x.float() - self.offset) / self.scale)
        if self.sr:
            if self.bilinear:  # align_corners=True, as the authors' code and `n2sr.nn.downsample`
                y = F.interpolate(y, size=[h, w], mode="bilinear", align_corners=True)
            else:
                y = halve(y)
        return y * self.scale + self.offset


def script(model: Packaged) -> torch.jit.ScriptModule:
    """The TorchScript module of `model`, frozen to its weights (the form deepImageJ loads)."""
    with torch.no_grad():
        return torch.jit.script(model.eval())
