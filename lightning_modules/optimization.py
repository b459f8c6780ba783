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
):
    """What `LightningModule.configure_optimizers` returns: AdamW groups and a scheduler stepped per step."""
    weight_decay = optimizer_factory.keywords.get("weight_decay", 0.0)
    optimizer = optimizer_factory(param_groups(model.named_parameters(), weight_decay, no_decay_names))
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer, total_steps=total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
