"""Stages 2 and 3: the LLM-connected model. Glue only: the math is in videochat2.models.videochat2."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info

from lightning_modules.optimization import configure_optimizers
from videochat2.builder import build_videochat2
from videochat2.checkpoints import QFORMER_TEXT_PATH
from videochat2.spec import ModelSpec

COMPONENTS = ("vision_encoder", "vision_layernorm", "qformer", "query_tokens", "extra_query_tokens", "llm_proj")
TEXT_PATH = re.compile(QFORMER_TEXT_PATH)


def component_of(name: str) -> str:
    if "lora_" in name:
        return "lora"
    return name.split(".")[0]


def checked_components(trainable: Sequence[str], lr_scale: dict[str, float]) -> dict[str, float]:
    """Refuse names that are no component before anything is loaded: a misspelt one would silently train
    the wrong set, or at the base rate. A scaled component frozen in this run (an ablation without LoRA,
    say) keeps its scale unused."""
    unknown = sorted(set(trainable) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"unknown trainable components {unknown}; choose from {COMPONENTS}")
    unknown = sorted(set(lr_scale) - {*COMPONENTS, "lora"})
    if unknown:
        raise ValueError(f"unknown components in model.lr_scale: {unknown}; choose from {[*COMPONENTS, 'lora']}")
    return lr_scale


class VideoChat2Module(LightningModule):
    """Stages 2 (caption loss) and 3 (instruction tuning, LoRA): trains the components named in `trainable`.

    The LLM base is frozen in every stage. Checkpoints keep only trainable tensors and buffers: a 7B run's
    checkpoint holds megabytes of adapters and projections, and the frozen weights come back from
    `init_from` and the base paths. Only the components this stage trains may start fresh.
    """

    strict_loading = False

    def __init__(
        self,
        spec: ModelSpec,
        trainable: Sequence[str],
        optimizer: Callable | None,
        lr_scale: Mapping[str, float] | None = None,
        scheduler: Callable | None = None,
        init_from: Sequence[str] = (),
        trust_checkpoint: bool = False,
        trust_remote_code: bool = False,
        decay_rule: str = "ours",
    ) -> None:
        super().__init__()
        self.stage = spec.stage
        self.lr_scale = checked_components(trainable, dict(lr_scale or {}))
        fresh = {*trainable, *(("lora",) if spec.llm.lora else ())} & {"llm_proj", "lora", "extra_query_tokens"}
        # Training may merge queries across counts: stage 2 extends stage 1's with zero-initialised ones.
        loaded = build_videochat2(spec, init_from, fresh, trust_checkpoint, trust_remote_code, exact_queries=False)
        self.spec, self.load_report = loaded.spec, loaded.report
        self.llm_tokenizer, self.qformer_tokenizer = loaded.llm_tokenizer, loaded.qformer_tokenizer
        # from_pretrained returns the LLM in eval mode; training mode turns LoRA dropout on, as the original.
        self.model = loaded.model.train()
        rank_zero_info(
            self.load_report.summary()
            if self.load_report is not None
            else "model.init_from=none: every component starts from its own initialisation"
        )
        self.set_trainable(trainable)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.decay_rule = decay_rule

    def set_trainable(self, trainable: Sequence[str]) -> None:
        """Train exactly the declared components (plus LoRA adapters, when the LLM has them).

        Each declared component must have something to train, so a typo or an empty component fails
        at start-up rather than after hours of training the wrong thing.
        """
        for name, param in self.model.named_parameters():
            param.requires_grad_(component_of(name) in (*trainable, "lora"))
            if not self.model.config.qformer_text_input and TEXT_PATH.match(name):
                param.requires_grad_(False)
        counts = self.parameter_table()
        idle = [c for c in trainable if counts.get(c, (0, 0))[0] == 0 and c != "extra_query_tokens"]
        if idle:
            raise ValueError(f"declared trainable but holding no trainable parameters: {idle}")
        rows = "\n".join(f"  {name:20s} {t:>12,d} / {f:>12,d}" for name, (t, f) in counts.items())
        rank_zero_info(f"parameters (trainable / frozen):\n{rows}")

    def parameter_table(self) -> dict[str, tuple[int, int]]:
        counts: dict[str, list[int]] = {}
        for name, param in self.model.named_parameters():
            row = counts.setdefault(component_of(name), [0, 0])
            row[0 if param.requires_grad else 1] += param.numel()
        return {name: (t, f) for name, (t, f) in counts.items()}

    def model_inputs(self, batch: dict) -> dict:
        keys = (
            "pixel_values",
            "input_ids_before",
            "input_ids_after",
            "labels_after",
            "attention_after",
            "instruction_ids",
            "instruction_mask",
        )
        return {k: batch[k] for k in keys if k in batch}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(**self.model_inputs(batch))
        self.log("train/loss", out["loss"], batch_size=batch["pixel_values"].shape[0], prog_bar=True)
        return out["loss"]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        keep |= {f"model.{n}" for n, _ in self.model.named_buffers() if not n.startswith("llm.")}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def configure_optimizers(self):
        return configure_optimizers(
            self.model,
            self.optimizer_factory,
            self.scheduler_factory,
            ("query_tokens", "extra_query_tokens"),
            self.trainer.estimated_stepping_batches,
            lambda name: self.lr_scale.get(component_of(name), 1.0),
            self.decay_rule,
        )
