"""BLIP-2 Q-Former as used by VideoChat2.

A BERT whose self-attention runs over [learned queries ; text]. Every `cross_attention_freq`-th layer lets the
query positions (only) cross-attend to the vision tokens, and queries and text have separate feed-forward
blocks. One module serves four attention patterns, chosen by the inputs:

- queries only (`input_ids=None`): visual tokens for retrieval and for the LLM;
- text only (`query_embeds=None`): bidirectional text encoding for VTC;
- queries + text, bidirectional: VTM and the stage-3 instruction-aware queries;
- queries + text with `causal=True`: captioning. Queries see only queries (so they equal the query-only
  output) and text token k sees all queries and text tokens ≤ k. The original caches the query keys/values of
  the query-only pass instead; recomputing them in the same pass gives the same numbers without a KV cache.

Parameter names follow the official checkpoints (`bert.embeddings…`, `bert.encoder.layer.N…`,
`cls.predictions…`) so released weights load by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videochat2.models.layers import DropPath, linspace

# Architecture presets, by the name configs use; each is the classmethod of that name.
QFORMER_PRESETS = ("tiny", "bert_base")


@dataclass
class QFormerConfig:
    # Full embedding size, i.e. len(tokenizer) once `[DEC]` is added (bert-base: 30522 + 1).
    vocab_size: int = 30523
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    encoder_width: int = 1024
    cross_attention_freq: int = 2
    num_query_tokens: int = 32
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    drop_path_rate: float = 0.2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    # `[DEC]`, the captioning BOS that replaces `[CLS]`; None means the last id (where it is appended).
    dec_token_id: int | None = None
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.dec_token_id is None:
            self.dec_token_id = self.vocab_size - 1

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> QFormerConfig:
        if preset not in QFORMER_PRESETS:
            raise ValueError(f"unknown Q-Former preset {preset!r}; choose one of {sorted(QFORMER_PRESETS)}")
        return getattr(cls, preset)(**overrides)

    @classmethod
    def bert_base(cls, **overrides) -> QFormerConfig:
        """bert-base-uncased sizes with `[DEC]` appended, cross-attending to UMT-L (1024-d) every 2nd layer."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> QFormerConfig:
        """A CPU-sized Q-Former for the tiny ViT (vocabulary from the tokenizer: `qformer_config_for_tokenizer`).

        Attention dropout is off: with it, CPU attention leaves the fused kernel and sampling the dropout mask
        costs about a quarter of a tiny training step.
        """
        values = dict(
            hidden_size=128,
            num_layers=4,
            num_heads=4,
            intermediate_size=256,
            max_position_embeddings=512,
            encoder_width=128,
            num_query_tokens=32,
            attention_dropout=0.0,
            drop_path_rate=0.1,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_bert_config(cls, bert_config, **overrides) -> QFormerConfig:
        """Sizes of a transformers `BertConfig`, plus one row for `[DEC]`."""
        values = dict(
            vocab_size=bert_config.vocab_size + 1,
            hidden_size=bert_config.hidden_size,
            num_layers=bert_config.num_hidden_layers,
            num_heads=bert_config.num_attention_heads,
            intermediate_size=bert_config.intermediate_size,
            max_position_embeddings=bert_config.max_position_embeddings,
            layer_norm_eps=bert_config.layer_norm_eps,
            initializer_range=bert_config.initializer_range,
            pad_token_id=bert_config.pad_token_id or 0,
        )
        values.update(overrides)
        return cls(**values)


class Embeddings(nn.Module):
    """Word + absolute position embeddings for text; queries get none. No token types."""

    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings)[None], persistent=True)

    def forward(self, input_ids: Tensor | None, query_embeds: Tensor | None) -> Tensor:
        parts = [] if query_embeds is None else [query_embeds]
        if input_ids is not None:
            if input_ids.shape[1] > self.position_ids.shape[1]:
                raise ValueError(
                    f"text of {input_ids.shape[1]} tokens exceeds the {self.position_ids.shape[1]} positions of the "
                    "Q-Former; truncate it when tokenizing"
                )
            positions = self.position_ids[:, : input_ids.shape[1]]
            parts.append(self.word_embeddings(input_ids) + self.position_embeddings(positions))
        return self.dropout(self.LayerNorm(torch.cat(parts, dim=1)))


class SelfAttention(nn.Module):
    """BERT attention projections; keys/values come from `context` (the vision tokens for cross-attention)."""

    def __init__(self, config: QFormerConfig, kv_width: int):
        super().__init__()
        self.num_heads = config.num_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(kv_width, config.hidden_size)
        self.value = nn.Linear(kv_width, config.hidden_size)
        self.dropout = config.attention_dropout

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, -1).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(context)), self._heads(self.value(context))
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return out.transpose(1, 2).flatten(2)


class ResidualOutput(nn.Module):
    """dense → dropout → drop-path → + residual → LayerNorm (BERT post-norm)."""

    def __init__(self, config: QFormerConfig, in_width: int, drop_path: float):
        super().__init__()
        self.dense = nn.Linear(in_width, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.drop_path(self.dropout(self.dense(x))) + residual)


class Attention(nn.Module):
    def __init__(self, config: QFormerConfig, kv_width: int, drop_path: float):
        super().__init__()
        self.self = SelfAttention(config, kv_width)
        self.output = ResidualOutput(config, config.hidden_size, drop_path)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.output(self.self(x, context, mask), x)


class Intermediate(nn.Module):
    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    def __init__(self, config: QFormerConfig, layer_num: int, drop_path: float):
        super().__init__()
        self.attention = Attention(config, config.hidden_size, drop_path)
        self.has_cross_attention = layer_num % config.cross_attention_freq == 0
        if self.has_cross_attention:
            self.crossattention = Attention(config, config.encoder_width, drop_path)
        self.intermediate = Intermediate(config)
        self.output = ResidualOutput(config, config.intermediate_size, drop_path)
        self.intermediate_query = Intermediate(config)
        self.output_query = ResidualOutput(config, config.intermediate_size, drop_path)

    def forward(self, x: Tensor, mask: Tensor | None, num_queries: int, vision: Tensor | None) -> Tensor:
        x = self.attention(x, x, mask)
        queries, text = x[:, :num_queries], x[:, num_queries:]
        parts = []
        if num_queries:
            if self.has_cross_attention:
                if vision is None:
                    raise ValueError("query positions need vision tokens for cross-attention")
                queries = self.crossattention(queries, vision)
            parts.append(self.output_query(self.intermediate_query(queries), queries))
        if text.shape[1]:
            parts.append(self.output(self.intermediate(text), text))
        return torch.cat(parts, dim=1)


class Encoder(nn.Module):
    def __init__(self, config: QFormerConfig):
        super().__init__()
        rates = linspace(config.drop_path_rate, config.num_layers)
        self.layer = nn.ModuleList(Layer(config, i, rates[i]) for i in range(config.num_layers))

    def forward(self, x: Tensor, mask: Tensor | None, num_queries: int, vision: Tensor | None) -> Tensor:
        for layer in self.layer:
            x = layer(x, mask, num_queries, vision)
        return x


def build_attention_mask(
    num_queries: int, text_mask: Tensor | None, text_len: int, causal: bool, batch: int, device
) -> Tensor | None:
    """Boolean [B, 1, S, S] mask over [queries ; text] (True = may attend), or None when all may attend.

    Bidirectional: every position sees every query and every non-padded text token. Causal: queries see only
    queries; text token k sees all queries and the non-padded text tokens ≤ k.
    """
    if text_mask is None and not causal:
        return None
    size = num_queries + text_len
    keys = torch.ones(batch, size, dtype=torch.bool, device=device)
    if text_mask is not None:
        keys[:, num_queries:] = text_mask.bool()
    mask = keys[:, None, None, :].expand(batch, 1, size, size)
    if causal:
        allowed = torch.ones(size, size, dtype=torch.bool, device=device).tril()
        allowed[:num_queries, :num_queries] = True
        allowed[num_queries:, :num_queries] = True
        mask = mask & allowed
    return mask


class QFormerModel(nn.Module):
    """The `bert` part: embeddings + encoder; returns the last hidden state over [queries ; text]."""

    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        query_embeds: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        causal: bool = False,
    ) -> Tensor:
        """`attention_mask` covers the text only (queries are never padded)."""
        if input_ids is None and query_embeds is None:
            raise ValueError("give input_ids, query_embeds or both")
        num_queries = 0 if query_embeds is None else query_embeds.shape[1]
        text_len = 0 if input_ids is None else input_ids.shape[1]
        x = self.embeddings(input_ids, query_embeds)
        text_mask = attention_mask if input_ids is not None else None
        mask = build_attention_mask(num_queries, text_mask, text_len, causal, x.shape[0], x.device)
        return self.encoder(x, mask, num_queries, encoder_hidden_states)


class PredictionHeadTransform(nn.Module):
    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class LMPredictionHead(nn.Module):
    """Decoder weight is tied to the word embeddings and its bias is `bias` (both names are in checkpoints)."""

    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.transform = PredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.transform(x))


class OnlyMLMHead(nn.Module):
    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.predictions = LMPredictionHead(config)

    def forward(self, x: Tensor) -> Tensor:
        return self.predictions(x)


class QFormer(nn.Module):
    """`qformer` of the stage-1 model: the BERT body plus the tied LM head used for captioning (VTG)."""

    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.config = config
        self.bert = QFormerModel(config)
        self.cls = OnlyMLMHead(config)
        self.apply(self._init_weights)
        self.tie_weights()

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def caption_loss(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        query_embeds: Tensor,
        encoder_hidden_states: Tensor,
        labels: Tensor,
        label_smoothing: float = 0.1,
    ) -> Tensor:
        """Next-token CE over the text, conditioned on the queries (causal text, queries blind to text)."""
        hidden = self.bert(input_ids, attention_mask, query_embeds, encoder_hidden_states, causal=True)
        logits = self.cls(hidden[:, query_embeds.shape[1] : -1])
        targets = labels[:, 1:]
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=-100,
            label_smoothing=label_smoothing,
        )

    @classmethod
    def from_bert(cls, path: str | Path, **overrides) -> QFormer:
        """Build from a local BERT checkpoint directory (e.g. bert-base-uncased) as VideoChat2 stage 1 does.

        BERT's weights are copied (cross-attention stays randomly initialised), the text FFN is copied into the
        query FFN so both start equal, and one embedding row (and LM bias entry) is appended for `[DEC]`.
        An MLM head in the checkpoint (`cls.predictions.transform`) is copied too; a plain `BertModel`
        directory leaves it at its random init.
        """
        from transformers import BertConfig

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(missing_bert_message(path))
        bert_config = BertConfig.from_pretrained(path, local_files_only=True)
        model = cls(QFormerConfig.from_bert_config(bert_config, **overrides))
        model.load_bert(path)
        return model

    def load_bert(self, path: str | Path) -> None:
        """Overwrite this Q-Former with a local BERT checkpoint's weights (see `from_bert`)."""
        from transformers import BertForMaskedLM

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(missing_bert_message(path))
        self._copy_bert(BertForMaskedLM.from_pretrained(path, local_files_only=True).state_dict())

    @torch.no_grad()
    def _copy_bert(self, source: dict[str, Tensor]) -> None:
        target = self.state_dict()
        for name, value in source.items():
            if name not in target or name.startswith("bert.pooler"):
                continue
            if name in (
                "bert.embeddings.word_embeddings.weight",
                "cls.predictions.bias",
                "cls.predictions.decoder.weight",
                "cls.predictions.decoder.bias",
            ):
                target[name][: value.shape[0]].copy_(value)
            elif target[name].shape == value.shape:
                target[name].copy_(value)
            else:
                raise ValueError(f"{name}: BERT has {tuple(value.shape)}, the Q-Former {tuple(target[name].shape)}")
        for name, value in target.items():
            if "_query." in name:
                value.copy_(target[name.replace("_query.", ".")])


def missing_bert_message(path: Path) -> str:
    """What to put where a BERT directory is missing (the stage-1 Q-Former starts from bert-base-uncased)."""
    return (
        f"no BERT checkpoint at {path}: put a Hugging Face BERT directory there (config.json and "
        "model.safetensors, e.g. bert-base-uncased saved with save_pretrained)"
    )
