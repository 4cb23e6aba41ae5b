"""The fast recipe's learning-rate schedule and weight average (`n2sr.config.TrainConfig.recipe`).

The schedule is a function of the fraction of the budget spent, not of the step number, so a
2-minute and a 10-minute run both warm up, peak and decay to zero exactly at their ends: the
rate is highest while the network is far from a solution and near zero when the time runs out,
which is what makes a short run good. The exponential moving average of the weights then
removes most of what noise the last steps still add. Pure: no files, no clock.
"""

from __future__ import annotations

import copy
import math

import torch


def budget_spent(step: float, iterations: int, elapsed: float, minutes: float | None) -> float:
    """Fraction of the budget spent, in [0, 1]: the larger of the steps' and (with a time
    budget) the seconds' fraction, since training stops at whichever ends first."""
    done = step / iterations
    if minutes is not None:
        done = max(done, elapsed / (60.0 * minutes))
    return min(done, 1.0)


def lr_factor(done: float, warmup: float) -> float:
    """Multiplier of the peak learning rate at `done` of the budget: linear warm-up over the
    first `warmup`, then a half cosine from 1 down to 0 at the end."""
    if done < warmup:
        return done / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min((done - warmup) / (1.0 - warmup), 1.0)))


class WeightAverage:
    """Exponential moving average of a model's weights, with the decay warmed up as
    ``min(decay, (1 + t) / (10 + t))`` so that a run of a few hundred steps averages over its
    recent steps rather than over its random initialisation."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1.0 - d)
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)
        self.updates += 1

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]
