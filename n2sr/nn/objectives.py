"""What distinguishes the trained methods: how a batch of noisy crops becomes a training example.

One training loop (`n2sr.nn.training`) serves every learned method; each method is an
`Objective` that turns a batch into ``(input, target, loss mask)`` and says which network it
needs. The loss is always the masked mean squared error (`n2sr.nn.subsample.complement_mse`).

| method | input | target | mask | network |
|---|---|---|---|---|
| n2sr | half-size sub-sample (`subsample`; stride 3/4: of a PD sub-image, `n2sr.nn.decorrelate`) | the batch | 3 unseen pixels per 2x2 cell | U-Net + 2x SR head |
| n2v | blind spots replaced by neighbours (`n2v_mask`) | the batch | blind spots | U-Net |
| n2s | grid phase replaced by donut mean (`n2s_mask`) | the batch | grid phase | U-Net |
| n2n | one capture of a pair | the other capture | all pixels | U-Net |

A method's own parameters are its settings object (`n2sr.config.METHOD_CONFIGS`);
``objective(method, settings)`` binds them into ``make`` so the loop stays method-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from n2sr.config import METHOD_CONFIGS, N2NConfig, N2SConfig, N2VConfig
from n2sr.nn.blindspot import n2s_mask, n2v_mask
from n2sr.nn.decorrelate import factor, random_phase
from n2sr.nn.subsample import subsample

Example = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """A trained method.

    scale : network output size over input size: 2 with the SR head, 1 for the plain U-Net.
    captures : noisy captures per training sample (2: Noise2Noise pairs of one field of view).
    settings : the method's own settings (an `n2sr.config` dataclass), or None.
    stride : Noise2SR's sub-sampler stride (`n2sr.nn.decorrelate`); crops of ``crop * patch_size``
        become one ``patch_size`` PD sub-image each before the 2x2 sub-sampler.
    """

    name: str
    scale: int
    captures: int
    settings: Any = None
    stride: int = 2

    @property
    def crop(self) -> int:
        """Crop side over patch side: the PD factor (1 for stride 2)."""
        return factor(self.stride)

    def make(self, batch: torch.Tensor, gen: torch.Generator) -> Example:
        """``batch (N, captures, crop P, crop P)`` -> ``(input, target, mask)``."""
        return _MAKERS[self.name](random_phase(batch, self.crop, gen), gen, self.settings)


def _n2sr(batch: torch.Tensor, gen: torch.Generator, _: None) -> Example:
    y_j, mask = subsample(batch, gen)
    return y_j, batch, mask


def _n2v(batch: torch.Tensor, gen: torch.Generator, s: N2VConfig) -> Example:
    inp, mask = n2v_mask(batch, gen, box=s.box, radius=s.radius)
    return inp, batch, mask


def _n2s(batch: torch.Tensor, gen: torch.Generator, s: N2SConfig) -> Example:
    inp, mask = n2s_mask(batch, gen, grid=s.grid)
    return inp, batch, mask


def _n2n(batch: torch.Tensor, gen: torch.Generator, _: N2NConfig) -> Example:
    """Either capture of a pair is the input, chosen per sample: both directions are equally valid."""
    swap = torch.randint(0, 2, (batch.shape[0], 1, 1, 1), generator=gen, device=batch.device).bool()
    first, second = batch[:, :1], batch[:, 1:2]
    return torch.where(swap, second, first), torch.where(swap, first, second), torch.ones_like(first)


_MAKERS: dict[str, Callable[[torch.Tensor, torch.Generator, Any], Example]] = {
    "n2sr": _n2sr, "n2v": _n2v, "n2s": _n2s, "n2n": _n2n}
_SHAPES = {"n2sr": (2, 1), "n2v": (1, 1), "n2s": (1, 1), "n2n": (1, 2)}  # (scale, captures)
METHODS = tuple(_MAKERS)


def objective(method: str, settings: Any = None, stride: int = 2) -> Objective:
    """The objective of a trained method, or an error listing the choices.

    `settings` is the method's `n2sr.config` dataclass (`METHOD_CONFIGS`); None: its defaults.
    `stride` (Noise2SR only): the sub-sampler's, 2, 3 or 4.
    """
    if stride != 2 and method != "n2sr":
        raise ValueError(f"stride {stride} is a Noise2SR sub-sampler setting; {method} takes stride 2")
    if method not in _MAKERS:
        raise ValueError(f"method must be one of {sorted(_MAKERS)} to train, not {method!r}")
    cls = METHOD_CONFIGS.get(method)
    if settings is None and cls is not None:
        settings = cls()
    if cls is not None and not isinstance(settings, cls):
        raise TypeError(f"{method} takes {cls.__name__} settings, not {type(settings).__name__}")
    scale, captures = _SHAPES[method]
    return Objective(method, scale, captures, settings, factor(stride) + 1)
