"""Stage-1 vision-language alignment: UMT ViT → Q-Former with contrastive (VTC), matching (VTM) and
captioning (VTG) losses, as VideoChat2's `VideoChat2_qformer`.

Attribute names follow the official stage-1 checkpoint (`umt_l16_qformer.pth`, a flat state dict), so it
loads with `load_state_dict(..., strict=True)` and no key map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videochat2.distributed import gather_no_grad, gather_with_grad
from videochat2.models.qformer import QFormer, QFormerConfig
from videochat2.models.vision import VisionConfig, VisionTransformer


@dataclass
class AlignmentConfig:
    embed_dim: int = 768
    temp: float = 0.07
    # How per-query similarities become one clip-text score: "mean" (VideoChat2) or "max" (BLIP-2).
    agg_method: str = "mean"
    vtm_hard_neg: bool = True
    # VTM head input: mean query output ⊕ text [CLS] output (True) or the mean query output alone.
    vtm_cat_text_cls: bool = True
    vtc_weight: float = 1.0
    vtm_weight: float = 1.0
    vtg_weight: float = 1.0
    # Frames (temporal tokens) of `vision_temp_embed`; images are broadcast to this many frames.
    num_frames: int = 4
    label_smoothing: float = 0.1
    freeze_vision: bool = True
    # Cross-rank VTC gradient: "sum" (ours: equals one process holding the global batch) or "local" (the
    # original's gather backward, 1/world_size of that; the official stage-1 weights were trained with it).
    vtc_gather_backward: str = "sum"

    def __post_init__(self) -> None:
        if self.agg_method not in ("mean", "max"):
            raise ValueError(f"agg_method must be 'mean' or 'max', got {self.agg_method!r}")


def similarity(vision_feats: Tensor, text_feats: Tensor, agg_method: str = "mean") -> Tensor:
    """[Nv, Q, E] × [Nt, E] → [Nv, Nt]: per-query dot products aggregated over the queries."""
    per_query = torch.einsum("mqe,ne->mqn", vision_feats, text_feats)
    return per_query.mean(1) if agg_method == "mean" else per_query.max(1).values


def positive_mask(idx_rows: Tensor, idx_cols: Tensor) -> Tensor:
    """Pairs with the same sample id are positives (several captions of one clip, or repeated samples)."""
    return idx_rows[:, None] == idx_cols[None, :]


def vtc_loss(sim_v2t: Tensor, idx_rows: Tensor, idx_cols: Tensor) -> Tensor:
    """Symmetric InfoNCE with soft multi-positive targets (row-normalised id-equality mask), no smoothing.

    `sim_v2t` is [Nv, Nt] already divided by the temperature.
    """
    targets = positive_mask(idx_rows, idx_cols).float()
    targets = targets / targets.sum(1, keepdim=True)
    loss_v2t = -(F.log_softmax(sim_v2t, dim=1) * targets).sum(1).mean()
    loss_t2v = -(F.log_softmax(sim_v2t.t(), dim=1) * targets.t()).sum(1).mean()
    return (loss_v2t + loss_t2v) / 2


def gathered_vtc_loss(
    vision_feats: Tensor,
    text_feats: Tensor,
    idx: Tensor,
    temp: Tensor | float,
    agg_method: str = "mean",
    backward: str = "sum",
) -> Tensor:
    """VTC over the batch gathered from all ranks; each rank computes the same global loss.

    Gradients reach the local rows summed over ranks (see `videochat2.distributed`), so after the usual
    data-parallel averaging they equal those of one process holding the whole batch; the original's
    gather passes back only the local slice, which leaves them world_size times too small (`backward="local"`).
    """
    vision_all = gather_with_grad(vision_feats, backward)
    text_all = gather_with_grad(text_feats, backward)
    idx_all = gather_no_grad(idx)
    return vtc_loss(similarity(vision_all, text_all, agg_method) / temp, idx_all, idx_all)


@torch.no_grad()
def sample_negatives(sim_v2t: Tensor, idx: Tensor, hard: bool = True) -> tuple[Tensor, Tensor]:
    """(vision negative per text, text negative per clip), drawn among non-positives.

    Hard: weights softmax(sim) + 1e-4 with positives zeroed (NaN → 1e-2), as the original. Otherwise uniform
    over non-positives. A row with no negative at all (every sample shares one id) falls back to uniform
    over the batch instead of failing.
    """
    mask = positive_mask(idx, idx)
    if hard:
        weights_v2t = F.softmax(sim_v2t.float(), dim=1) + 1e-4
        weights_t2v = F.softmax(sim_v2t.t().float(), dim=1) + 1e-4
    else:
        weights_v2t = torch.ones_like(sim_v2t, dtype=torch.float)
        weights_t2v = torch.ones_like(sim_v2t, dtype=torch.float)
    picks = []
    for weights in (weights_t2v, weights_v2t):
        weights = torch.nan_to_num(weights.masked_fill(mask, 0), nan=1e-2, posinf=1e-2, neginf=1e-2)
        empty = weights.sum(1) <= 0
        weights[empty] = 1.0
        picks.append(torch.multinomial(weights, 1).squeeze(1))
    return picks[0], picks[1]


class VideoChat2Alignment(nn.Module):
    """Stage-1 model. `forward` returns the weighted total and the three losses."""

    def __init__(self, config: AlignmentConfig, vision: VisionConfig, qformer: QFormerConfig):
        super().__init__()
        if qformer.encoder_width != vision.embed_dim:
            raise ValueError(f"qformer.encoder_width {qformer.encoder_width} != vision.embed_dim {vision.embed_dim}")
        self.config = config
        width, hidden = vision.embed_dim, qformer.hidden_size
        self.vision_encoder = VisionTransformer(vision)
        self.vision_layernorm = nn.LayerNorm(width, eps=1e-12)
        self.vision_temp_embed = nn.Parameter(torch.empty(1, config.num_frames, 1, width))
        self.qformer = QFormer(qformer)
        self.query_tokens = nn.Parameter(torch.empty(1, qformer.num_query_tokens, hidden))
        self.vision_proj = nn.Linear(hidden, config.embed_dim)
        self.text_proj = nn.Linear(hidden, config.embed_dim)
        self.itm_head = nn.Linear(2 * hidden if config.vtm_cat_text_cls else hidden, 2)
        self.temp = nn.Parameter(torch.tensor(config.temp))
        self._init_weights()
        if config.freeze_vision:
            self.vision_encoder.requires_grad_(False)

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.vision_temp_embed, std=1.0)
        nn.init.trunc_normal_(self.query_tokens, std=1.0)
        for head in (self.vision_proj, self.text_proj, self.itm_head):
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)

    def no_weight_decay(self) -> set[str]:
        return {"query_tokens", "temp", "vision_temp_embed"}

    def encode_vision(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T, 3, H, W] → (vision_embeds [B, N, C_vis], vision_query_embeds [B, Q, H]).

        An image (T = 1) is broadcast over the `num_frames` temporal embeddings, giving num_frames copies of
        its tokens with different temporal codes, as the original.
        """
        needs_grad = any(p.requires_grad for p in self.vision_encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and needs_grad):
            frames = self.vision_encoder(pixel_values)
        t = frames.shape[1]
        if t not in (1, self.config.num_frames):
            raise ValueError(
                f"the stage-1 temporal embedding covers {self.config.num_frames} frames; got {t} (use that many "
                "frames or images)"
            )
        frames = frames + self.vision_temp_embed.to(frames.dtype)
        vision_embeds = self.vision_layernorm(frames.flatten(1, 2))
        queries = self.query_tokens.expand(vision_embeds.shape[0], -1, -1)
        vision_query_embeds = self.qformer.bert(query_embeds=queries, encoder_hidden_states=vision_embeds)
        return vision_embeds, vision_query_embeds

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Bidirectional text-only pass → (text_embeds [B, L, H], text_cls [B, H])."""
        text_embeds = self.qformer.bert(input_ids, attention_mask)
        return text_embeds, text_embeds[:, 0]

    def vision_features(self, pixel_values: Tensor) -> Tensor:
        """L2-normalised per-query projections [B, Q, E] for retrieval."""
        return F.normalize(self.vision_proj(self.encode_vision(pixel_values)[1]), dim=-1)

    def text_features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """L2-normalised [CLS] projections [B, E] for retrieval."""
        return F.normalize(self.text_proj(self.encode_text(input_ids, attention_mask)[1]), dim=-1)

    def similarity(self, vision_feats: Tensor, text_feats: Tensor) -> Tensor:
        """[Nv, Nt] clip-text similarity aggregated over queries, without the temperature."""
        return similarity(vision_feats, text_feats, self.config.agg_method)

    def vtm_embed(self, vision_embeds: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Joint bidirectional pass over [queries ; text] → the features the matching head classifies."""
        queries = self.query_tokens.expand(input_ids.shape[0], -1, -1)
        hidden = self.qformer.bert(input_ids, attention_mask, queries, vision_embeds)
        num_queries = queries.shape[1]
        pooled = hidden[:, :num_queries].mean(1)
        if self.config.vtm_cat_text_cls:
            pooled = torch.cat([pooled, hidden[:, num_queries]], dim=1)
        return pooled

    def itm_scores(self, vision_embeds: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Match logit [N] for row-aligned (clip, text) pairs, for re-ranking retrieval candidates."""
        return self.itm_head(self.vtm_embed(vision_embeds, input_ids, attention_mask))[:, 1]

    def vtc(self, vision_feats: Tensor, text_feats: Tensor, idx: Tensor) -> Tensor:
        return gathered_vtc_loss(
            vision_feats, text_feats, idx, self.temp, self.config.agg_method, self.config.vtc_gather_backward
        )

    def vtm(
        self,
        vision_embeds: Tensor,
        vision_feats: Tensor,
        text_feats: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        idx: Tensor,
        vision_neg_idx: Tensor | None = None,
        text_neg_idx: Tensor | None = None,
    ) -> Tensor:
        """Matching loss on 3B local pairs: positives, (negative clip, text), (clip, negative text)."""
        if vision_neg_idx is None or text_neg_idx is None:
            with torch.no_grad():
                sim = self.similarity(vision_feats, text_feats) / self.temp
            vision_neg_idx, text_neg_idx = sample_negatives(sim, idx, self.config.vtm_hard_neg)
        vision_neg_idx, text_neg_idx = vision_neg_idx.reshape(-1), text_neg_idx.reshape(-1)
        vision = torch.cat([vision_embeds, vision_embeds[vision_neg_idx], vision_embeds])
        ids = torch.cat([input_ids, input_ids, input_ids[text_neg_idx]])
        mask = torch.cat([attention_mask, attention_mask, attention_mask[text_neg_idx]])
        logits = self.itm_head(self.vtm_embed(vision, ids, mask))
        batch = input_ids.shape[0]
        labels = torch.zeros(3 * batch, dtype=torch.long, device=logits.device)
        labels[:batch] = 1
        return F.cross_entropy(logits, labels)

    def vtg(self, vision_embeds: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Captioning: `[DEC]` replaces `[CLS]`, text is causal over all queries, pad targets ignored."""
        cfg = self.qformer.config
        text_ids = input_ids.clone()
        text_ids[:, 0] = cfg.dec_token_id
        labels = text_ids.masked_fill(text_ids == cfg.pad_token_id, -100)
        queries = self.query_tokens.expand(input_ids.shape[0], -1, -1)
        return self.qformer.caption_loss(
            text_ids, attention_mask, queries, vision_embeds, labels, self.config.label_smoothing
        )

    def forward(
        self,
        pixel_values: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        idx: Tensor,
        *,
        vision_neg_idx: Tensor | None = None,
        text_neg_idx: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Stage-1 losses. `idx` marks which samples share a caption source (equal id = positive pair).

        `vision_neg_idx` / `text_neg_idx` ([B]) replace the sampled VTM negatives, for reproducible checks.
        A loss whose weight is 0 is skipped and reported as 0.
        """
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        cfg = self.config
        vision_embeds, vision_query_embeds = self.encode_vision(pixel_values)
        _, text_cls = self.encode_text(input_ids, attention_mask)
        vision_feats = F.normalize(self.vision_proj(vision_query_embeds), dim=-1)
        text_feats = F.normalize(self.text_proj(text_cls), dim=-1)
        zero = vision_feats.new_zeros(())
        loss_vtc = self.vtc(vision_feats, text_feats, idx) if cfg.vtc_weight else zero
        loss_vtm = (
            self.vtm(
                vision_embeds, vision_feats, text_feats, input_ids, attention_mask, idx, vision_neg_idx, text_neg_idx
            )
            if cfg.vtm_weight
            else zero
        )
        loss_vtg = self.vtg(vision_embeds, input_ids, attention_mask) if cfg.vtg_weight else zero
        loss = cfg.vtc_weight * loss_vtc + cfg.vtm_weight * loss_vtm + cfg.vtg_weight * loss_vtg
        return {"loss": loss, "loss_vtc": loss_vtc, "loss_vtm": loss_vtm, "loss_vtg": loss_vtg}
