"""VideoChat2 for stages 2-3: visual tokens from the ViT and Q-Former, spliced into a causal LLM.

frames -> `vision_encoder` -> `vision_layernorm` -> `qformer` (queries, optionally reading the instruction)
-> `llm_proj` -> `num_query` embeddings placed where the prompt's `<VideoHere>`/`<ImageHere>` stood.

Queries: `query_tokens` are the stage-1 queries (the first `num_base_query`); `extra_query_tokens` are added
from stage 2 on and start at zero, as in the paper. `llm_proj` is the projection the official checkpoints
call `llama_proj`/`mistral_proj`/`phi_proj`. The official stage-3 checkpoints were trained with position 0
of the LLM input holding a constant vector equal to the BOS id instead of the BOS embedding; `bos_quirk`
reproduces that in the training forward only, because the original's inference (demos, MVBench) feeds the
real BOS embedding.

Sequences are built per sample as [text before the placeholder ; visual tokens ; text after it], then padded:
on the right for training, on the left for generation and next-token scoring (with position ids counted
from the first real token, so a sample's logits do not depend on its batch).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from videochat2.models.qformer import QFormer, QFormerConfig
from videochat2.models.vision import VisionConfig, VisionTransformer

IGNORE_INDEX = -100


@dataclass
class VideoChat2Config:
    # Visual tokens per clip; the first `num_base_query` are the stage-1 queries, the rest extra ones.
    num_query: int = 96
    num_base_query: int = 32
    # Stage 3: the instruction text goes into the Q-Former beside the queries.
    qformer_text_input: bool = False
    # Training: position 0 holds a constant vector equal to the BOS id (the official stage-3 behaviour).
    bos_quirk: bool = False


class VideoChat2(nn.Module):
    def __init__(self, config: VideoChat2Config, vision: VisionConfig, qformer: QFormerConfig, llm: PreTrainedModel):
        super().__init__()
        if qformer.encoder_width != vision.embed_dim:
            raise ValueError(f"qformer.encoder_width {qformer.encoder_width} != vision.embed_dim {vision.embed_dim}")
        self.config = config
        hidden = qformer.hidden_size
        self.vision_encoder = VisionTransformer(vision)
        self.vision_layernorm = nn.LayerNorm(vision.embed_dim, eps=1e-12)
        self.qformer = QFormer(qformer)
        self.qformer.cls = None
        num_base = min(config.num_query, config.num_base_query)
        self.query_tokens = nn.Parameter(torch.empty(1, num_base, hidden))
        nn.init.trunc_normal_(self.query_tokens, std=1.0)
        self.extra_query_tokens = nn.Parameter(torch.zeros(1, config.num_query - num_base, hidden))
        # Frozen base (and LoRA adapters, when stage 3 adds them) as built by videochat2.models.llm.
        self.llm = llm
        self.llm_proj = nn.Linear(hidden, llm.config.get_text_config().hidden_size)
        # Inference: the dtype the visual path (ViT, Q-Former, projection) autocasts to, as the original's
        # `maybe_autocast` does on a GPU (fp16); None runs it in its weights' dtype. Set by `device.place`.
        self.visual_autocast: torch.dtype | None = None

    @property
    def bos_token_id(self) -> int:
        return self.llm.config.bos_token_id

    def queries(self, batch_size: int) -> Tensor:
        return torch.cat([self.query_tokens, self.extra_query_tokens], dim=1).expand(batch_size, -1, -1)

    def encode_frames(self, pixel_values: Tensor) -> Tensor:
        """[B, T, 3, H, W] -> the normalised ViT tokens the Q-Former reads, [B, T·L, vision width]."""
        with self._visual_precision(pixel_values):
            return self.vision_layernorm(self.vision_encoder(pixel_values).flatten(1, 2))

    def _visual_precision(self, like: Tensor) -> contextlib.AbstractContextManager:
        """Autocast at `visual_autocast` on `like`'s device kind; nothing when unset."""
        if self.visual_autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=like.device.type, dtype=self.visual_autocast)

    def encode_visual(
        self,
        pixel_values: Tensor,
        instruction_ids: Tensor | None = None,
        instruction_mask: Tensor | None = None,
    ) -> Tensor:
        """[B, T, 3, H, W] (+ the Q-Former instruction) -> visual tokens [B, num_query, llm width]."""
        return self.visual_tokens(self.encode_frames(pixel_values), instruction_ids, instruction_mask)

    def visual_tokens(
        self, vision_embeds: Tensor, instruction_ids: Tensor | None = None, instruction_mask: Tensor | None = None
    ) -> Tensor:
        """ViT tokens (from `encode_frames`) -> visual tokens [B, num_query, llm width]."""
        queries = self.queries(vision_embeds.shape[0])
        if not self.config.qformer_text_input:
            instruction_ids = instruction_mask = None
        with self._visual_precision(vision_embeds):
            hidden = self.qformer.bert(instruction_ids, instruction_mask, queries, vision_embeds)
            return self.llm_proj(hidden[:, : queries.shape[1]])

    def embed_tokens(self, ids: Tensor) -> Tensor:
        return self.llm.get_input_embeddings()(ids)

    def _sample_embeds(self, before: Tensor, visual: Tensor, after: Tensor, bos_quirk: bool) -> Tensor:
        embeds = torch.cat([self.embed_tokens(before), visual.to(self.llm.dtype), self.embed_tokens(after)])
        if bos_quirk:
            embeds = torch.cat([torch.full_like(embeds[:1], float(self.bos_token_id)), embeds[1:]])
        return embeds

    def build_inputs(
        self,
        visual: Tensor,
        input_ids_before: list[Tensor],
        input_ids_after: list[Tensor],
        labels_after: list[Tensor] | None = None,
        padding_side: str = "right",
        bos_quirk: bool = False,
        attention_after: list[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Splice each sample's visual tokens between its two text parts and pad the batch.

        Returns `inputs_embeds`, `attention_mask`, `position_ids` and, when `labels_after` is given,
        `labels` (-100 everywhere except the learned answer tokens). `bos_quirk` puts the constant BOS-id
        vector at position 0; only the training forward asks for it (see the module docstring).
        `attention_after` marks padding the collator put inside the after part (0 = padding, e.g. the
        original's left-padded Phi-3 captions); such gaps still count positions, as in the original.
        """
        embeds, labels, masks = [], [], []
        for i, (before, after) in enumerate(zip(input_ids_before, input_ids_after)):
            embeds.append(self._sample_embeds(before, visual[i], after, bos_quirk))
            head = len(before) + visual.shape[1]
            if attention_after is not None:
                masks.append(torch.cat([attention_after[i].new_ones(head), attention_after[i]]))
            if labels_after is not None:
                masked = torch.full((head,), IGNORE_INDEX, device=after.device)
                labels.append(torch.cat([masked, labels_after[i]]))
        batch = _pad(embeds, padding_side, masks or None)
        if labels_after is not None:
            batch["labels"] = _pad_labels(labels, batch["attention_mask"].shape[1], padding_side)
        return batch

    def forward(
        self,
        pixel_values: Tensor,
        input_ids_before: list[Tensor],
        input_ids_after: list[Tensor],
        labels_after: list[Tensor],
        instruction_ids: Tensor | None = None,
        instruction_mask: Tensor | None = None,
        attention_after: list[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Causal-LM loss on the answer tokens (mean over all learned tokens of the batch)."""
        visual = self.encode_visual(pixel_values, instruction_ids, instruction_mask)
        batch = self.build_inputs(
            visual,
            input_ids_before,
            input_ids_after,
            labels_after,
            bos_quirk=self.config.bos_quirk,
            attention_after=attention_after,
        )
        labels = batch.pop("labels")
        # No KV cache in training: activation checkpointing (FSDP's wrapper) re-runs each decoder layer in the
        # backward pass, and a cache would receive the keys twice (sdpa then fails on padded batches).
        logits = self.llm(**batch, use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
        return {"loss": loss, "logits": logits, "labels": labels}

    def prompt_batch(
        self,
        pixel_values: Tensor | None,
        input_ids_before: list[Tensor],
        input_ids_after: list[Tensor],
        instruction_ids: Tensor | None = None,
        instruction_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Left-padded inference inputs: the prompts with their visual tokens (real BOS at position 0).

        Without pixels the prompts are text only: no visual tokens stand between the two parts.
        """
        if pixel_values is None:
            visual = self.llm_proj.weight.new_zeros(len(input_ids_before), 0, self.llm_proj.out_features)
        else:
            visual = self.encode_visual(pixel_values, instruction_ids, instruction_mask)
        return self.build_inputs(visual, input_ids_before, input_ids_after, padding_side="left")

    @torch.no_grad()
    def next_token_logits(
        self,
        pixel_values: Tensor | None,
        input_ids_before: list[Tensor],
        input_ids_after: list[Tensor],
        instruction_ids: Tensor | None = None,
        instruction_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits [B, vocab] of the token that follows each prompt (left padding, batch-invariant)."""
        batch = self.prompt_batch(pixel_values, input_ids_before, input_ids_after, instruction_ids, instruction_mask)
        return self.llm(**batch, logits_to_keep=1, use_cache=False).logits[:, -1].float()

    @torch.no_grad()
    def score_options(self, candidate_ids: list[int], **prompt) -> Tensor:
        """Next-token logits restricted to `candidate_ids` (e.g. the option letters): [B, len(candidates)]."""
        return self.next_token_logits(**prompt)[:, candidate_ids]

    @torch.no_grad()
    def generate(
        self,
        pixel_values: Tensor | None,
        input_ids_before: list[Tensor],
        input_ids_after: list[Tensor],
        instruction_ids: Tensor | None = None,
        instruction_mask: Tensor | None = None,
        **generate_kwargs,
    ) -> Tensor:
        """Greedy (by default) continuation token ids [B, new tokens] of each prompt."""
        batch = self.prompt_batch(pixel_values, input_ids_before, input_ids_after, instruction_ids, instruction_mask)
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("use_cache", True)  # generation keeps the KV cache training turns off
        generate_kwargs.setdefault("pad_token_id", self.llm.config.pad_token_id or self.llm.config.eos_token_id)
        batch.pop("position_ids")
        return self.llm.generate(**batch, **generate_kwargs)


def _pad(embeds: list[Tensor], side: str, masks: list[Tensor] | None = None) -> dict[str, Tensor]:
    """Pad [L_i, D] sequences to one batch; padded positions get mask 0.

    Right padding counts positions from 0 over every column (gaps inside a row included), as Hugging Face
    does without position ids; left padding counts from the first real token, so a prompt's logits do not
    depend on its batch.
    """
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be left or right, got {side!r}")
    length = max(e.shape[0] for e in embeds)
    out = embeds[0].new_zeros(len(embeds), length, embeds[0].shape[1])
    mask = torch.zeros(len(embeds), length, dtype=torch.long, device=out.device)
    for i, e in enumerate(embeds):
        span = slice(length - e.shape[0], length) if side == "left" else slice(0, e.shape[0])
        out[i, span] = e
        mask[i, span] = 1 if masks is None else masks[i]
    if side == "right":
        positions = torch.arange(length, device=out.device).repeat(len(embeds), 1)
    else:
        positions = ((mask > 0).long().cumsum(1) - 1).clamp(min=0)
    return {"inputs_embeds": out, "attention_mask": mask, "position_ids": positions}


def _pad_labels(labels: list[Tensor], length: int, side: str) -> Tensor:
    out = torch.full((len(labels), length), IGNORE_INDEX, dtype=torch.long, device=labels[0].device)
    for i, row in enumerate(labels):
        if side == "left":
            out[i, length - len(row) :] = row
        else:
            out[i, : len(row)] = row
    return out
