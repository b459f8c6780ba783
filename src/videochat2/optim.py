"""Optimizer parameter groups and the learning-rate schedule of the original recipes.

Weight decay (`decay_rule`): ours ("ours") exempts tensors of at most one dimension, biases and the model's
`no_weight_decay()` names (query tokens, temperature, temporal embedding); the original ("original") exempts
only 1-D tensors and biases, so it decays the query tokens, the temporal embedding and the 0-d temperature.
The schedule is the original's per-step cosine whose warmup starts at `min_lr_multi * lr` rather than at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

DECAY_RULES = ("ours", "original")


def param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    no_decay_names: Iterable[str] = (),
    lr_scale: Callable[[str], float] | None = None,
    base_lr: float | None = None,
    decay_rule: str = "ours",
) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed group at the base learning rate, plus
    one such pair per other scale that `lr_scale` (parameter name -> multiplier) assigns.

    The scaled groups carry their own `lr` (base_lr × scale), so a per-group schedule such as
    `cosine_with_warmup` moves them in step with the rest.
    """
    if decay_rule not in DECAY_RULES:
        raise ValueError(f"decay_rule must be one of {DECAY_RULES}, got {decay_rule!r}")
    exempt = set(no_decay_names)
    groups = {(1.0, True): [], (1.0, False): []}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        if decay_rule == "original":
            skip = param.ndim == 1 or name.endswith(".bias")
        else:
            skip = param.ndim <= 1 or name.endswith(".bias") or name in exempt or name.split(".")[-1] in exempt
        scale = lr_scale(name) if lr_scale is not None else 1.0
        groups.setdefault((scale, not skip), []).append(param)
    if any(scale != 1.0 for scale, _ in groups) and base_lr is None:
        raise ValueError("a learning-rate scale other than 1 needs the base learning rate")
    return [
        {
            "params": params,
            "weight_decay": weight_decay if decayed else 0.0,
            **({"lr": base_lr * scale} if scale != 1.0 else {}),
        }
        for (scale, decayed), params in groups.items()
        if params or scale == 1.0
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
