"""What distinguishes the trained methods: how a batch of noisy crops becomes a training example.

One training loop (`n2sr.train`) serves every learned method; each method is an `Objective`
that turns a batch into ``(input, target, loss mask)`` and says which network it needs. The
loss is always the masked mean squared error (`n2sr.subsample.complement_mse`).

| method | input | target | mask | network |
|---|---|---|---|---|
| n2sr | half-size sub-sample (`subsample`) | the batch | 3 unseen pixels per 2x2 cell | U-Net + 2x SR head |
| n2v | blind spots replaced by neighbours (`n2v_mask`) | the batch | blind spots | U-Net |
| n2s | grid phase replaced by donut mean (`n2s_mask`) | the batch | grid phase | U-Net |
| n2n | one capture of a pair | the other capture | all pixels | U-Net |

A method's own parameters (the blind-spot geometry) are `TrainConfig` fields named in
`Objective.settings`; ``objective(method, cfg)`` binds their values into ``make`` so the
training loop stays method-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Callable

import torch

from n2sr.blindspot import N2S_GRID, N2V_BOX, N2V_RADIUS, n2s_mask, n2v_mask
from n2sr.subsample import subsample

if TYPE_CHECKING:
    from n2sr.train import TrainConfig

Example = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """A trained method.

    scale : network output size over input size: 2 with the SR head, 1 for the plain U-Net.
    captures : noisy captures per training sample (2: Noise2Noise pairs of one field of view).
    make : ``(batch (N, captures, P, P), generator, **settings) -> (input, target, mask)``.
    settings : the `TrainConfig` fields ``make`` takes as keywords (its defaults are the
        published values); other methods' settings do not affect this one.
    """

    name: str
    scale: int
    captures: int
    make: Callable[..., Example]
    settings: tuple[str, ...] = ()


def _n2sr(batch: torch.Tensor, gen: torch.Generator) -> Example:
    y_j, mask = subsample(batch, gen)
    return y_j, batch, mask


def _n2v(batch: torch.Tensor, gen: torch.Generator, *, n2v_box: int = N2V_BOX,
         n2v_radius: int = N2V_RADIUS) -> Example:
    inp, mask = n2v_mask(batch, gen, box=n2v_box, radius=n2v_radius)
    return inp, batch, mask


def _n2s(batch: torch.Tensor, gen: torch.Generator, *, n2s_grid: int = N2S_GRID) -> Example:
    inp, mask = n2s_mask(batch, gen, grid=n2s_grid)
    return inp, batch, mask


def _n2n(batch: torch.Tensor, gen: torch.Generator) -> Example:
    """Either capture of a pair is the input, chosen per sample: both directions are equally valid."""
    swap = torch.randint(0, 2, (batch.shape[0], 1, 1, 1), generator=gen, device=batch.device).bool()
    first, second = batch[:, :1], batch[:, 1:2]
    return torch.where(swap, second, first), torch.where(swap, first, second), torch.ones_like(first)


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("n2sr", 2, 1, _n2sr),
    Objective("n2v", 1, 1, _n2v, ("n2v_box", "n2v_radius")),
    Objective("n2s", 1, 1, _n2s, ("n2s_grid",)),
    Objective("n2n", 1, 2, _n2n),
)}


def objective(method: str, cfg: "TrainConfig | None" = None) -> Objective:
    """The objective of a trained method, or an error listing the choices.

    With `cfg`, ``make`` uses cfg's values of the method's `Objective.settings`; without it,
    the published defaults (enough to ask for ``scale`` or ``captures``).
    """
    try:
        obj = OBJECTIVES[method]
    except KeyError:
        raise ValueError(f"method must be one of {sorted(OBJECTIVES)} to train, not {method!r}") from None
    if cfg is None or not obj.settings:
        return obj
    return replace(obj, make=partial(obj.make, **{k: getattr(cfg, k) for k in obj.settings}))


def method_settings() -> frozenset[str]:
    """Every `TrainConfig` field that only some methods use (see `Objective.settings`)."""
    return frozenset(k for o in OBJECTIVES.values() for k in o.settings)
