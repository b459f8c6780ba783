"""Stages 2 and 3: the LLM-connected model. Glue only: the math is in videochat2.models.videochat2."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningModule

from lightning_modules.optimization import configure_optimizers

from videochat2.checkpoints import (
    BASE_LLM,
    FRESH_LORA,
    FRESH_PROJECTION,
    QFORMER_TEXT_PATH,
    UNUSED_TEXT_PATH,
    load_checkpoints,
)
from videochat2.models.llm import LLMConfig, build_llm
from videochat2.models.qformer import QFormerConfig
from videochat2.models.tokenizers import load_qformer_tokenizer, qformer_config_for_tokenizer
from videochat2.models.videochat2 import VideoChat2, VideoChat2Config
from videochat2.models.vision import VisionConfig

log = logging.getLogger(__name__)

COMPONENTS = ("vision_encoder", "vision_layernorm", "qformer", "query_tokens", "extra_query_tokens", "llm_proj")
TEXT_PATH = re.compile(QFORMER_TEXT_PATH)


def component_of(name: str) -> str:
    if "lora_" in name:
        return "lora"
    return name.split(".")[0]


class VideoChat2Module(LightningModule):
    """Trains the components named in `trainable`; the LLM base is frozen in every stage.

    Checkpoints keep only trainable tensors and buffers: a 7B run's checkpoint holds megabytes of
    adapters and projections, and the frozen weights come back from `init_from` and the base paths.
    """

    stage = 2
    strict_loading = False

    def __init__(
        self,
        vision: VisionConfig,
        qformer: QFormerConfig,
        llm: LLMConfig,
        videochat2: VideoChat2Config,
        qformer_tokenizer: str,
        llm_tokenizer: str | None,
        trainable: Sequence[str],
        optimizer: Callable,
        lr_scale: Mapping[str, float] | None = None,
        scheduler: Callable | None = None,
        init_from: Sequence[str] = (),
        pretrained_root: str | None = None,
        trust_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        qformer = qformer_config_for_tokenizer(qformer, load_qformer_tokenizer(qformer_tokenizer))
        llm_model, self.llm_tokenizer = build_llm(llm, llm_tokenizer, pretrained_root)
        # from_pretrained returns the LLM in eval mode; training mode turns LoRA dropout on, as the original.
        self.model = VideoChat2(videochat2, vision, qformer, llm_model).train()
        if init_from:
            unused = (UNUSED_TEXT_PATH,) if not videochat2.qformer_text_input else ()
            self.load_report = load_checkpoints(
                self.model, init_from, (BASE_LLM, *unused), (FRESH_PROJECTION, FRESH_LORA), trust_checkpoint
            )
            log.info(self.load_report.summary())
        else:
            self.load_report = None
            log.info("model.init_from=none: every component starts from its own initialisation")
        self.set_trainable(trainable)
        self.lr_scale = self.checked_lr_scale(dict(lr_scale or {}))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def set_trainable(self, trainable: Sequence[str]) -> None:
        """Train exactly the declared components (plus LoRA adapters, when the LLM has them).

        Each declared component must have something to train, so a typo or an empty component fails
        at start-up rather than after hours of training the wrong thing.
        """
        unknown = set(trainable) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown trainable components {sorted(unknown)}; choose from {COMPONENTS}")
        for name, param in self.model.named_parameters():
            param.requires_grad_(component_of(name) in (*trainable, "lora"))
            if not self.model.config.qformer_text_input and TEXT_PATH.match(name):
                param.requires_grad_(False)
        counts = self.parameter_table()
        idle = [c for c in trainable if counts.get(c, (0, 0))[0] == 0 and c != "extra_query_tokens"]
        if idle:
            raise ValueError(f"declared trainable but holding no trainable parameters: {idle}")
        log.info("parameters (trainable / frozen):\n%s", "\n".join(
            f"  {name:20s} {t:>12,d} / {f:>12,d}" for name, (t, f) in counts.items()))

    def checked_lr_scale(self, lr_scale: dict[str, float]) -> dict[str, float]:
        """A misspelt component would silently train at the base rate: refuse names that are no component.

        A component that is frozen in this run (an ablation without LoRA, say) keeps its scale unused.
        """
        unknown = sorted(set(lr_scale) - {*COMPONENTS, "lora"})
        if unknown:
            raise ValueError(f"unknown components in model.lr_scale: {unknown}; choose from {[*COMPONENTS, 'lora']}")
        return lr_scale

    def parameter_table(self) -> dict[str, tuple[int, int]]:
        counts: dict[str, list[int]] = {}
        for name, param in self.model.named_parameters():
            row = counts.setdefault(component_of(name), [0, 0])
            row[0 if param.requires_grad else 1] += param.numel()
        return {name: (t, f) for name, (t, f) in counts.items()}

    def model_inputs(self, batch: dict) -> dict:
        keys = ("pixel_values", "input_ids_before", "input_ids_after", "labels_after",
                "instruction_ids", "instruction_mask")
        return {k: batch[k] for k in keys if k in batch}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(**self.model_inputs(batch))
        self.log("train/loss", out["loss"], batch_size=batch["pixel_values"].shape[0], prog_bar=True)
        return out["loss"]

    def on_fit_start(self) -> None:
        """The load report goes into the run directory, beside config.yaml."""
        if self.load_report is not None and self.trainer.is_global_zero:
            self.load_report.write(Path(self.trainer.default_root_dir) / "load_report.json")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        keep |= {f"model.{n}" for n, _ in self.model.named_buffers() if not n.startswith("llm.")}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def configure_optimizers(self):
        return configure_optimizers(
            self.model, self.optimizer_factory, self.scheduler_factory, ("query_tokens", "extra_query_tokens"),
            self.trainer.estimated_stepping_batches, lambda name: self.lr_scale.get(component_of(name), 1.0),
        )


class ConnectionModule(VideoChat2Module):
    """Stage 2: caption loss through the frozen LLM."""

    stage = 2


class InstructionModule(VideoChat2Module):
    """Stage 3: LoRA instruction tuning with the instruction read by the Q-Former."""

    stage = 3
