"""Stage 1: Q-Former alignment (VTC + VTM + VTG). Glue only: the math is in videochat2.models."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info

from lightning_modules.optimization import configure_optimizers
from videochat2.builder import build_alignment
from videochat2.eval.retrieval.metrics import retrieval_metrics
from videochat2.spec import ModelSpec


class AlignmentModule(LightningModule):
    """Stage 1: everything trains (the vision encoder unless `alignment.freeze_vision`); the Q-Former and heads
    may start fresh, e.g. from a vision-encoder-only file."""

    def __init__(
        self,
        spec: ModelSpec,
        optimizer: Callable | None,
        scheduler: Callable | None = None,
        init_from: Sequence[str] = (),
        trust_checkpoint: bool = False,
        decay_rule: str = "ours",
    ) -> None:
        super().__init__()
        self.stage = spec.stage
        loaded = build_alignment(spec, init_from, ("qformer",), trust_checkpoint, exact_queries=False)
        self.spec, self.load_report, self.qformer_tokenizer = loaded.spec, loaded.report, loaded.qformer_tokenizer
        self.model = loaded.model
        if self.load_report is not None:
            rank_zero_info(self.load_report.summary())
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.decay_rule = decay_rule
        self._val_vision: list[torch.Tensor] = []
        self._val_text: list[torch.Tensor] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["idx"])
        size = batch["pixel_values"].shape[0]
        self.log_dict({f"train/{k}": v for k, v in out.items()}, batch_size=size, prog_bar=True)
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._val_vision.append(self.model.vision_features(batch["pixel_values"]).float().cpu())
        self._val_text.append(self.model.text_features(batch["input_ids"], batch["attention_mask"]).float().cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_vision:
            return
        vision, text = torch.cat(self._val_vision), torch.cat(self._val_text)
        self._val_vision.clear()
        self._val_text.clear()
        metrics = retrieval_metrics(self.model.similarity(vision, text), torch.arange(text.shape[0]))
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, sync_dist=True)

    def configure_optimizers(self):
        return configure_optimizers(
            self.model,
            self.optimizer_factory,
            self.scheduler_factory,
            self.model.no_weight_decay(),
            self.trainer.estimated_stepping_batches,
            decay_rule=self.decay_rule,
        )
