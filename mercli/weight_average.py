"""An exponential moving average of the trained weights (Polyak averaging).

With a constant learning rate the weights at the end of an epoch are one noisy point of the
path; their running average over the last few hundred steps is usually a better model, and
the run's epochs differ less from seed to seed. Training keeps stepping the model's own weights;
validation, the choice of epoch and the saved checkpoint read the average
(:meth:`WeightAverage.applied`). ``TrainConfig.weight_average`` turns it on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """``shadow = d * shadow + (1 - d) * weight`` for each trained parameter after each
    optimizer step, with ``d = min(decay, n / (n + 1))`` at step ``n`` (0 first): until the
    window ``1 / (1 - decay)`` is full, the plain mean of the weights after each step so far,
    so that the random initial weights do not linger in it."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the average's decay must lie in (0, 1), not {decay}")
        self.decay = decay
        self.n_steps = 0
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shadow = {n: p.detach().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self, *_: Any) -> None:
        """Take the weights after a step in (also an optimizer step post-hook: arguments
        ignored)."""
        decay = min(self.decay, self.n_steps / (self.n_steps + 1))
        for name, param in self.params.items():
            self.shadow[name].lerp_(param.detach(), 1.0 - decay)
        self.n_steps += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own after it."""
        own = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in self.params.items():
                    param.copy_(own[name])

    def state_dict(self) -> dict[str, Any]:
        return {"n_steps": self.n_steps, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError("the saved average holds other parameters than this model trains")
        self.n_steps = int(state["n_steps"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
