"""A model from its spec and checkpoints: the one builder that training, evaluation, chat and export share.

Loading goes through `checkpoints.load_checkpoints`, so every key is loaded, ignored by a named rule or
missing under a named rule. Which components may start from their own initialisation is the caller's to
say (`allow_fresh`), and only training says it, for the components its stage trains; everyone else gets a
model whose every trained tensor came from a checkpoint, or an error naming the keys that did not. For the
same reason only training may merge queries across counts (`exact_queries=False`: stage 2 extends stage 1's
32 queries with zero-initialised extra ones); everyone else gets an error naming both counts.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from videochat2.checkpoints import (
    BASE_LLM,
    FRESH_LORA,
    FRESH_PROJECTION,
    FRESH_QUERIES,
    FRESH_STAGE1,
    UNUSED_TEXT_PATH,
    LoadReport,
    MissingRule,
    load_checkpoints,
)
from videochat2.device import Placement
from videochat2.models.alignment import VideoChat2Alignment
from videochat2.models.llm import build_llm
from videochat2.models.qformer import missing_bert_message
from videochat2.models.tokenizers import load_qformer_tokenizer, qformer_config_for_tokenizer
from videochat2.models.videochat2 import VideoChat2
from videochat2.spec import ModelSpec

# What may start fresh, by the name of the component a training stage trains: (rule, whether the rule holds
# only when no checkpoint carries the component at all). Extra queries are per query: a stage-2 file with 64
# queries starts a 96-query stage 3 with 32 fresh ones.
FRESH = {
    "llm_proj": (FRESH_PROJECTION, True),
    "lora": (FRESH_LORA, True),
    "extra_query_tokens": (FRESH_QUERIES, False),
    "qformer": (FRESH_STAGE1, True),
}


@dataclass
class LoadedModel:
    """A built model with its tokenizers, the spec it was built from, and the account of its loading."""

    model: VideoChat2 | VideoChat2Alignment
    spec: ModelSpec
    qformer_tokenizer: PreTrainedTokenizerBase
    llm_tokenizer: PreTrainedTokenizerBase | None = None
    report: LoadReport | None = None
    checkpoints: tuple[str, ...] = ()
    # Where and at which precision `load_model` put it (None: as built, on the CPU).
    placement: Placement | None = None

    @property
    def device(self) -> torch.device:
        return self.placement.device if self.placement is not None else torch.device("cpu")

    def autocast(self) -> contextlib.AbstractContextManager:
        """The whole-forward autocast its precision asks for (`*-mixed`); a no-op otherwise."""
        return self.placement.autocast() if self.placement is not None else contextlib.nullcontext()

    def visual_autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for code that runs only the visual path (retrieval, the probe)."""
        return self.placement.visual() if self.placement is not None else contextlib.nullcontext()

    @property
    def template(self) -> str:
        """The conversation template of the LLM (stages 2-3)."""
        if self.spec.llm is None:
            raise ValueError("a stage-1 model has no LLM and no conversation template")
        return self.spec.llm.conversation_template


def _rules(always: Sequence[MissingRule], allow_fresh: Collection[str]) -> tuple[list[MissingRule], list[MissingRule]]:
    unknown = sorted(set(allow_fresh) - set(FRESH))
    if unknown:
        raise ValueError(f"no fresh-start rule for {unknown}; known: {sorted(FRESH)}")
    chosen = [FRESH[name] for name in allow_fresh]
    return [*always, *(r for r, if_absent in chosen if not if_absent)], [r for r, if_absent in chosen if if_absent]


def _load(
    model: nn.Module,
    checkpoints: Sequence[str | Path],
    always: Sequence[MissingRule],
    allow_fresh: Collection[str],
    trust_checkpoint: bool,
    exact_queries: bool,
) -> LoadReport | None:
    if not checkpoints:
        return None
    missing, if_absent = _rules(always, allow_fresh)
    return load_checkpoints(model, checkpoints, missing, if_absent, trust_checkpoint, exact_queries)


def is_bert_directory(path: str | Path) -> bool:
    """A Hugging Face BERT directory (its config.json names model_type bert)."""
    config = Path(path) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "bert"


def split_bert_directories(
    checkpoints: Sequence[str | Path], required: bool = True
) -> tuple[list[Path], list[str | Path]]:
    """(BERT directories, other checkpoints) of an `init_from` chain.

    A missing `bert*` path is reported as a missing BERT directory when `required`, else left out (a stage-2/3
    chain inherits it from stage 1 but takes the whole Q-Former from the stage-1 weights after it).
    """
    bert, rest = [], []
    for checkpoint in checkpoints:
        path = Path(checkpoint)
        if path.name.lower().startswith("bert") and not path.exists():
            if required:
                raise FileNotFoundError(missing_bert_message(path))
            continue
        if is_bert_directory(path):
            bert.append(path)
        else:
            rest.append(checkpoint)
    return bert, rest


def build_alignment(
    spec: ModelSpec,
    checkpoints: Sequence[str | Path] = (),
    allow_fresh: Collection[str] = (),
    trust_checkpoint: bool = False,
    exact_queries: bool = True,
) -> LoadedModel:
    """The stage-1 model of `spec`, loaded from `checkpoints` in order (none: its own initialisation).

    A BERT directory among them initialises the Q-Former as the original's stage 1 does (`QFormer.load_bert`:
    BERT's weights, the text FFN copied into the query FFN, a `[DEC]` row; cross-attention stays fresh)
    before the other checkpoints load, so a later stage-1 file still overrides it.
    """
    tokenizer = load_qformer_tokenizer(spec.qformer_tokenizer)
    spec = replace(spec, qformer=qformer_config_for_tokenizer(spec.qformer, tokenizer))
    model = VideoChat2Alignment(spec.alignment, spec.vision, spec.qformer)
    bert, files = split_bert_directories(checkpoints)
    for directory in bert:
        model.qformer.load_bert(directory)
    report = _load(model, files, (), allow_fresh, trust_checkpoint, exact_queries)
    return LoadedModel(model, spec, tokenizer, None, report, tuple(map(str, checkpoints)))


def build_videochat2(
    spec: ModelSpec,
    checkpoints: Sequence[str | Path] = (),
    allow_fresh: Collection[str] = (),
    trust_checkpoint: bool = False,
    trust_remote_code: bool = False,
    exact_queries: bool = True,
) -> LoadedModel:
    """The stage-2/3 model of `spec`: the frozen LLM from its own directory, the rest from `checkpoints`.

    The base LLM never comes from a checkpoint, and without an instruction input the Q-Former's text path
    is never used, so neither has to be found; anything else missing must be allowed by `allow_fresh`.
    """
    qformer_tokenizer = load_qformer_tokenizer(spec.qformer_tokenizer)
    spec = replace(spec, qformer=qformer_config_for_tokenizer(spec.qformer, qformer_tokenizer))
    # A stage-1 chain may start with the BERT directory its Q-Former began from; the stage-1 weights after it
    # carry the whole Q-Former, so it has nothing left to give here.
    checkpoints = split_bert_directories(checkpoints, required=False)[1]
    llm, llm_tokenizer = build_llm(spec.llm, spec.llm_tokenizer, spec.pretrained_root, trust_remote_code)
    model = VideoChat2(spec.videochat2, spec.vision, spec.qformer, llm)
    always = (BASE_LLM,) if spec.videochat2.qformer_text_input else (BASE_LLM, UNUSED_TEXT_PATH)
    report = _load(model, checkpoints, always, allow_fresh, trust_checkpoint, exact_queries)
    return LoadedModel(model, spec, qformer_tokenizer, llm_tokenizer, report, tuple(map(str, checkpoints)))


def build_model(spec: ModelSpec, checkpoints: Sequence[str | Path] = (), **options) -> LoadedModel:
    """`build_alignment` for a stage-1 spec, `build_videochat2` for stages 2-3."""
    if spec.stage == 1:
        options.pop("trust_remote_code", None)
        return build_alignment(spec, checkpoints, **options)
    return build_videochat2(spec, checkpoints, **options)
