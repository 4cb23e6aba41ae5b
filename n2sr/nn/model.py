"""The Noise2SR network: a Noise2Noise U-Net followed by a 2x super-resolution head.

The network maps a half-size sub-sampled image ``y_J`` (N, 1, H, W) to a full-size
prediction (N, 1, 2H, 2W); at inference the whole noisy image goes in and the 2x output is
averaged back down (``denoise.py``).

Where the authors' code (GitHub MeijiTian/Noise2SR, ``model.py``) and the paper's text
(MICCAI 2022, Sec. 2.3) differ, and what each option here follows:

- SR head. Code: U-Net -> 64 channels -> conv3x3 64->256 + PixelShuffle(2) -> ReLU ->
  1x1 64->64 -> ReLU -> 1x1 64->64 -> ReLU -> 1x1 64->1 (its ``Upsampler`` asks for PReLU
  but only adds it together with batch norm, which is off, so there is none).
  Paper: "a transposed convolutional layer of 2x factor and two convolutional layers of
  1x1 kernel size". ``variant="code"`` builds the former, ``variant="paper"`` the latter
  as ConvTranspose2d(k3, s2, p1, op1) -> ReLU -> 1x1 -> ReLU -> 1x1 (kernel and widths
  are not in the paper; they copy the U-Net's own transposed convs and the code's 64).
- U-Net output width: code 64 (``feature_dim``), paper 256 ("we set the output channel
  of U-Net as 256"). ``unet_out_channels`` defaults to the variant's value.
- Shared weights: the code applies one encoder block at four levels and one decoder block
  at three (as noise2noise-pytorch does); the paper says U-Net "following the same
  structure as Noise2Noise", whose Table 2 has separate layers. ``shared_weights`` chooses;
  True reproduces the code.
- Initialisation: the code comments out noise2noise-pytorch's He init, so PyTorch's
  default init is used; so here.
- Last U-Net block: the code uses 128 -> 128 channels (``final_features``) where
  Noise2Noise has 64 -> 32; here the code's.
- Loss normalisation (``subsample.complement_mse``): the code averages over all pixels
  with zeros at the sampled ones (3/4 of the paper's Eq. 3); here the paper's mean over the
  complement pixels.
- Downsampling at inference (``denoise.py``): the code uses bilinear with
  ``align_corners=True``; the paper says bilinear. A 2x2 mean is the default there because
  it is exact and independent of the tile grid.
- Input size: the code needs H, W divisible by 32; here ``forward`` pads bottom/right by
  reflection and crops, so any size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from n2sr.config import MULTIPLE, ModelConfig

def pad_to_multiple(x: torch.Tensor, multiple: int = MULTIPLE) -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom/right up to a multiple of `multiple`.

    Only bottom/right, so a tile whose origin is a multiple of `multiple` sees the same
    pooling grid as the whole plane. Reflection needs the pad to be smaller than the image;
    tiny images fall back to edge replication.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


def _up(ch: int) -> nn.ConvTranspose2d:
    """2x upsampling as in Noise2Noise: output pixel 2i+1 mixes inputs i and i+1."""
    return nn.ConvTranspose2d(ch, ch, 3, stride=2, padding=1, output_padding=1)


class UNet(nn.Module):
    """The Noise2Noise U-Net (five poolings) as in the authors' code.

    Encoder: conv-ReLU-conv-ReLU-pool, then conv-ReLU-pool at four more levels.
    Decoder: conv-ReLU-up at the bottom, (conv-ReLU) x2-up at four levels with skip
    concatenations, and a last block on [features, input] ending in LeakyReLU(0.1).
    ``shared_weights=True`` applies one module at the four encoder levels and one at the
    three 144-channel decoder levels, as the code does. Usable alone (Noise2Void/Noise2Self
    baselines): ``forward`` takes any H, W.
    """

    def __init__(self, in_ch: int = 1, out_ch: int = 1, features: int = 48,
                 shared_weights: bool = True, final_features: int = 128) -> None:
        super().__init__()
        f, f2 = features, 2 * features
        self.head = nn.Sequential(_conv(in_ch, f), nn.ReLU(inplace=True), _conv(f, f), nn.ReLU(inplace=True), nn.MaxPool2d(2))

        def enc() -> nn.Module:
            return nn.Sequential(_conv(f, f), nn.ReLU(inplace=True), nn.MaxPool2d(2))

        def dec() -> nn.Module:
            return nn.Sequential(_conv(f2 + f, f2), nn.ReLU(inplace=True), _conv(f2, f2), nn.ReLU(inplace=True), _up(f2))

        shared_enc, shared_dec = enc(), dec()
        self.down = nn.ModuleList([shared_enc if shared_weights else enc() for _ in range(4)])
        self.bottom = nn.Sequential(_conv(f, f), nn.ReLU(inplace=True), _up(f))
        self.up_first = nn.Sequential(_conv(f2, f2), nn.ReLU(inplace=True), _conv(f2, f2), nn.ReLU(inplace=True), _up(f2))
        self.up = nn.ModuleList([shared_dec if shared_weights else dec() for _ in range(3)])
        self.tail = nn.Sequential(
            _conv(f2 + in_ch, final_features), nn.ReLU(inplace=True),
            _conv(final_features, final_features), nn.ReLU(inplace=True),
            _conv(final_features, out_ch), nn.LeakyReLU(0.1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, out_ch, H, W)."""
        h, w = x.shape[-2:]
        xp = pad_to_multiple(x)
        skips = [xp]
        y = self.head(xp)
        for block in self.down:
            skips.append(y)
            y = block(y)
        y = self.bottom(y)
        y = self.up_first(torch.cat((y, skips.pop()), dim=1))
        for block in self.up:
            y = block(torch.cat((y, skips.pop()), dim=1))
        y = self.tail(torch.cat((y, skips.pop()), dim=1))
        return y[..., :h, :w]


class N2SRNet(nn.Module):
    """U-Net + 2x SR head: (N, 1, H, W) -> (N, 1, 2H, 2W) for any H, W."""

    def __init__(self, cfg: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        c, s = cfg.unet_out_channels, cfg.sr_channels
        self.unet = UNet(1, c, cfg.features, cfg.shared_weights, cfg.final_features)
        if cfg.variant == "code":
            upsample: list[nn.Module] = [nn.Conv2d(c, 4 * s, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(inplace=True),
                                         nn.Conv2d(s, s, 1), nn.ReLU(inplace=True)]
        else:
            upsample = [nn.ConvTranspose2d(c, s, 3, stride=2, padding=1, output_padding=1), nn.ReLU(inplace=True)]
        self.sr = nn.Sequential(*upsample, nn.Conv2d(s, s, 1), nn.ReLU(inplace=True), nn.Conv2d(s, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.sr(self.unet(pad_to_multiple(x)))
        return y[..., : 2 * h, : 2 * w]


def build_model(cfg: ModelConfig = ModelConfig(), sr: bool = True) -> nn.Module:
    """The network for `cfg`, in PyTorch's default initialisation.

    ``sr=False``: the same U-Net without the SR head, ``(N, 1, H, W) -> (N, 1, H, W)``, as the
    paper trains its Noise2Void, Noise2Self and Noise2Noise baselines (``variant``,
    ``unet_out_channels`` and ``sr_channels`` then do not apply).
    """
    if sr:
        return N2SRNet(cfg)
    return UNet(1, 1, cfg.features, cfg.shared_weights, cfg.final_features)


def from_state(model_config: dict, scale: int, weights: dict[str, torch.Tensor]) -> nn.Module:
    """The trained network a checkpoint describes, in eval mode on the CPU.

    `scale` 2 is Noise2SR's network, 1 the baselines' plain U-Net; a state that does not fit
    the architecture is an error naming the first mismatching keys.
    """
    if scale not in (1, 2):
        raise ValueError(f"scale must be 1 (same-size U-Net) or 2 (Noise2SR), got {scale}")
    model = build_model(ModelConfig(**model_config), sr=scale == 2)
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # tensors of the wrong shape
        raise ValueError(f"weights do not fit the recorded architecture ({str(exc).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise ValueError(f"weights do not fit the recorded architecture (missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]})")
    return model.eval()


def _extent(cfg: ModelConfig, length: int, sr: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """For each output pixel of a 1-D signal, the first and last input pixel it depends on.

    Propagates dependency intervals through the layers exactly (index arithmetic only), so
    the pooling grid and the odd/even taps of the transposed convs are accounted for.
    """

    def conv(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat((lo[:1], lo[:-1])), torch.cat((hi[1:], hi[-1:]))

    def pool(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return lo[0::2], hi[1::2]

    def up(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # even output 2i <- input i; odd output 2i+1 <- inputs i and i+1 (if it exists)
        nxt = torch.cat((hi[1:], hi[-1:]))
        return torch.stack((lo, lo), 1).flatten(), torch.stack((hi, nxt), 1).flatten()

    def cat(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.minimum(a[0], b[0]), torch.maximum(a[1], b[1])

    def convs(t: tuple[torch.Tensor, torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(n):
            t = conv(*t)
        return t

    x = (torch.arange(length), torch.arange(length))
    skips = [x]
    t = pool(*convs(x, 2))
    for _ in range(4):
        skips.append(t)
        t = pool(*conv(*t))
    t = up(*conv(*t))
    for _ in range(4):
        t = up(*convs(cat(t, skips.pop()), 2))
    t = convs(cat(t, skips.pop()), 3)
    if not sr:
        return t
    if cfg.variant == "code":  # conv3x3 then PixelShuffle: output 2i, 2i+1 <- U-Net pixel i
        t = conv(*t)
        return t[0].repeat_interleave(2), t[1].repeat_interleave(2)
    return up(*t)


def receptive_field(cfg: ModelConfig = ModelConfig(), sr: bool = True) -> int:
    """Radius r in input pixels: output pixel q (of 2H) depends only on inputs within r of q // 2.

    ``sr=False``: of the U-Net alone (output pixel q of H depends on inputs within r of q).

    The tiler uses it as the halo: outputs farther than r from a tile's edge are exact.
    Independent of the weights, of ``shared_weights`` and of the channel widths; taken over
    all positions relative to the 32-pixel pooling grid, away from the image borders.
    """
    length = 32 * MULTIPLE
    lo, hi = _extent(cfg, length, sr)
    scale = 2 if sr else 1
    centre = torch.arange(scale * length) // scale
    inner = slice(scale * 8 * MULTIPLE, scale * (length - 8 * MULTIPLE))
    return int(torch.maximum(centre - lo, hi - centre)[inner].max())
