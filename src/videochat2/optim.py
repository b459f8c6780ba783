"""Optimizer parameter groups and the learning-rate schedule of the original recipes.

The original decays every weight matrix but exempts 1-D tensors, biases and the model's
`no_weight_decay()` names (query tokens, temperature, temporal embedding); its schedule is a
per-step cosine whose warmup starts at `min_lr_multi * lr` rather than at zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    no_decay_names: Iterable[str] = (),
) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed group."""
    exempt = set(no_decay_names)
    decay, no_decay = [], []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        skip = param.ndim <= 1 or name.endswith(".bias") or name in exempt or name.split(".")[-1] in exempt
        (no_decay if skip else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def cosine_lr_multiplier(step: int, total_steps: int, warmup_steps: int, min_lr_multi: float) -> float:
    """The factor applied to the base learning rate at `step` (0-based)."""
    if step < warmup_steps:
        return max(min_lr_multi, step / max(1, warmup_steps))
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(min_lr_multi, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_ratio: float = 0.2,
    min_lr_multi: float = 0.01,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step; `warmup_ratio` is a fraction of `total_steps`."""
    warmup_steps = int(round(warmup_ratio * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_lr_multiplier(step, total_steps, warmup_steps, min_lr_multi)
    )
