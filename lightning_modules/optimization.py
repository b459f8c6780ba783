"""The optimizer and per-step schedule every stage uses, built from Hydra `_partial_` factories."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from videochat2.optim import param_groups


def configure_optimizers(
    model: nn.Module,
    optimizer_factory: Callable,
    scheduler_factory: Callable | None,
    no_decay_names: Iterable[str],
    total_steps: int,
    lr_scale: Callable[[str], float] | None = None,
    decay_rule: str = "ours",
):
    """What `LightningModule.configure_optimizers` returns: AdamW groups and a scheduler stepped per step."""
    keywords = optimizer_factory.keywords
    groups = param_groups(
        model.named_parameters(),
        keywords.get("weight_decay", 0.0),
        no_decay_names,
        lr_scale,
        keywords.get("lr"),
        decay_rule,
    )
    optimizer = optimizer_factory(groups)
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer, total_steps=total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
