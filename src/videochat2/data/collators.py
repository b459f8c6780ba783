"""Batch builders: frames stacked, text tokenized for the Q-Former (stage 1) or the LLM (stages 2-3).

Collation runs in the DataLoader workers, so tokenization and prompt rendering cost the training loop
nothing. Stage-2/3 batches keep the LLM text as per-sample lists (the two parts around the media
placeholder), because the model splices the visual tokens in before padding.
"""

from __future__ import annotations

import random

import torch
from transformers import PreTrainedTokenizerBase

from videochat2.data.conversation import (
    build_caption_conversation,
    build_choice_conversation,
    build_conversation,
    tokenize_conversation,
)
from videochat2.data.formats import MediaRecord


def _common(samples: list[dict]) -> dict:
    return {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "idx": torch.tensor([s["idx"] for s in samples]),
        "media_type": samples[0]["media_type"],
        "skipped": [msg for s in samples for msg in s["skipped"]],
    }


class CaptionCollator:
    """Stage 1: captions tokenized for the Q-Former, padded to `max_length` as the original."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int = 32) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, samples: list[dict]) -> dict:
        captions = [s["record"].caption for s in samples]
        text = self.tokenizer(
            captions, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {**_common(samples), "input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
                "captions": captions}


class ConversationCollator:
    """Stages 2-3: a caption or QA record -> the family's prompt, LLM token ids and answer labels.

    A record with a caption becomes a stage-2 caption request (a random phrasing per sample); a record
    with QA turns becomes a stage-3 conversation (multi-turn lists shuffled); a multiple-choice record
    becomes the benchmark's prompt, its options re-ordered per draw when `shuffle_options`. The Q-Former
    instruction is tokenized with `qformer_tokenizer` when one is given (stage 3).
    """

    def __init__(
        self,
        llm_tokenizer: PreTrainedTokenizerBase,
        template: str,
        max_length: int = 512,
        qformer_tokenizer: PreTrainedTokenizerBase | None = None,
        qformer_max_length: int = 512,
        system: str = "",
        shuffle_options: bool = False,
    ) -> None:
        self.llm_tokenizer = llm_tokenizer
        self.shuffle_options = shuffle_options
        self.template = template
        self.max_length = max_length
        self.qformer_tokenizer = qformer_tokenizer
        self.qformer_max_length = qformer_max_length
        self.system = system

    def conversation(self, record: MediaRecord, rng: random.Random):
        if record.caption is not None:
            return build_caption_conversation(
                record.caption, self.template, record.media_type, tokenizer=self.llm_tokenizer, rng=rng
            )
        if record.choice is not None:
            return build_choice_conversation(
                record.choice, self.template, record.media_type, tokenizer=self.llm_tokenizer, rng=rng,
                shuffle=self.shuffle_options,
            )
        return build_conversation(
            {"QA": list(record.qa)}, self.template, record.media_type,
            system=self.system, tokenizer=self.llm_tokenizer, rng=rng,
        )

    def __call__(self, samples: list[dict]) -> dict:
        rng = random.Random(random.getrandbits(64))
        conversations = [self.conversation(s["record"], rng) for s in samples]
        tokens = [tokenize_conversation(c, self.llm_tokenizer, self.max_length) for c in conversations]
        batch = {
            **_common(samples),
            "input_ids_before": [t["input_ids_before"] for t in tokens],
            "input_ids_after": [t["input_ids_after"] for t in tokens],
            "labels_after": [t["labels_after"] for t in tokens],
        }
        if self.qformer_tokenizer is not None:
            text = self.qformer_tokenizer(
                [c.instruction for c in conversations], padding="longest", truncation=True,
                max_length=self.qformer_max_length, return_tensors="pt",
            )
            batch["instruction_ids"], batch["instruction_mask"] = text["input_ids"], text["attention_mask"]
        return batch
