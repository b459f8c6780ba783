"""Layers shared by the vision encoder and the Q-Former: stochastic depth and its per-layer rates."""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor


def linspace(stop: float, steps: int) -> list[float]:
    """Per-layer drop-path rates 0 … stop; plain Python so that models also build on the meta device."""
    return [stop * i / (steps - 1) for i in range(steps)] if steps > 1 else [0.0] * steps


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch and rescale the survivors."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.rate, self.training)
