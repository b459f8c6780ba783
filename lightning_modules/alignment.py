"""Stage 1: Q-Former alignment (VTC + VTM + VTG). Glue only: the math is in videochat2.models."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningModule

from lightning_modules.optimization import configure_optimizers

from videochat2.checkpoints import FRESH_STAGE1, load_checkpoints
from videochat2.eval.retrieval import retrieval_metrics
from videochat2.models.alignment import AlignmentConfig, VideoChat2Alignment
from videochat2.models.qformer import QFormerConfig
from videochat2.models.tokenizers import load_qformer_tokenizer, qformer_config_for_tokenizer
from videochat2.models.vision import VisionConfig

log = logging.getLogger(__name__)


class AlignmentModule(LightningModule):
    stage = 1

    def __init__(
        self,
        vision: VisionConfig,
        qformer: QFormerConfig,
        alignment: AlignmentConfig,
        qformer_tokenizer: str,
        optimizer: Callable,
        scheduler: Callable | None = None,
        init_from: Sequence[str] = (),
        trust_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        qformer = qformer_config_for_tokenizer(qformer, load_qformer_tokenizer(qformer_tokenizer))
        self.model = VideoChat2Alignment(alignment, vision, qformer)
        self.load_report = load_checkpoints(self.model, init_from, (), (FRESH_STAGE1,), trust_checkpoint) if init_from else None
        if self.load_report is not None:
            log.info(self.load_report.summary())
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._val_vision: list[torch.Tensor] = []
        self._val_text: list[torch.Tensor] = []

    def on_fit_start(self) -> None:
        """The load report goes into the run directory, beside config.yaml."""
        if self.load_report is not None and self.trainer.is_global_zero:
            self.load_report.write(Path(self.trainer.default_root_dir) / "load_report.json")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["idx"])
        size = batch["pixel_values"].shape[0]
        self.log_dict({f"train/{k}": v for k, v in out.items()}, batch_size=size)
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
            self.model, self.optimizer_factory, self.scheduler_factory, self.model.no_weight_decay(),
            self.trainer.estimated_stepping_batches,
        )
