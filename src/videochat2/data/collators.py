"""Batch builders: frames stacked, text tokenized for the Q-Former (stage 1) or the LLM (stages 2-3).

Collation runs in the DataLoader workers, so tokenization and prompt rendering cost the training loop
nothing. Stage-2/3 batches keep the LLM text as per-sample lists (the two parts around the media
placeholder), because the model splices the visual tokens in before padding.
"""

from __future__ import annotations

import random
from copy import deepcopy

import torch
from transformers import PreTrainedTokenizerBase

from videochat2.data.conversation import (
    CAPTION_FORMATS,
    build_caption_conversation,
    build_choice_conversation,
    build_conversation,
    caption_request,
    frame_time_message,
    tokenize_caption_batch,
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
        return {
            **_common(samples),
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "captions": captions,
        }


# Where the original pads and cuts the Q-Former instruction: its Mistral and Phi-3 classes on the left.
QFORMER_PADDING_SIDES = {"vicuna_v0": "right", "mistral_instruct": "left", "phi3": "left"}


def sided_tokenizer(tokenizer: PreTrainedTokenizerBase, side: str) -> PreTrainedTokenizerBase:
    """A private copy padding and truncating on `side`, so the shared tokenizer keeps its own settings."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be left or right, got {side!r}")
    copy = deepcopy(tokenizer)
    copy.padding_side = copy.truncation_side = side
    return copy


class ConversationCollator:
    """Stages 2-3: a caption or QA record -> the family's prompt, LLM token ids and answer labels.

    A batch of caption records is a stage-2 batch tokenized as the original does (`tokenize_caption_batch`:
    one caption request drawn per batch from `caption_prompt_set`, the caption tokenized apart and cut to
    `max_length`); a record with QA turns becomes a stage-3 conversation (multi-turn lists shuffled); a
    multiple-choice record becomes the benchmark's prompt, its options re-ordered per draw when
    `shuffle_options`. The Q-Former instruction is tokenized with `qformer_tokenizer` when one is given
    (stage 3), padded and cut on `qformer_padding_side` (None: the family's side in the original).
    `time_message` adds the original's "The video contains N frames sampled at ... seconds." to video
    conversations, from the `seconds` the reader returned for each sample.
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
        caption_prompt_set: str = "ours",
        caption_padding_side: str | None = None,
        caption_mask_pad_id: bool = True,
        qformer_padding_side: str | None = None,
        time_message: bool = False,
    ) -> None:
        self.llm_tokenizer = llm_tokenizer
        self.shuffle_options = shuffle_options
        self.template = template
        self.max_length = max_length
        self.qformer_max_length = qformer_max_length
        self.system = system
        self.caption_prompt_set = caption_prompt_set
        self.caption_padding_side = caption_padding_side
        self.caption_mask_pad_id = caption_mask_pad_id
        self.time_message = time_message
        side = qformer_padding_side or QFORMER_PADDING_SIDES.get(template, "right")
        self.qformer_tokenizer = None if qformer_tokenizer is None else sided_tokenizer(qformer_tokenizer, side)

    def conversation(self, sample: dict, rng: random.Random):
        record: MediaRecord = sample["record"]
        if record.caption is not None:
            return build_caption_conversation(
                record.caption, self.template, record.media_type, tokenizer=self.llm_tokenizer, rng=rng
            )
        if record.choice is not None:
            return build_choice_conversation(
                record.choice,
                self.template,
                record.media_type,
                tokenizer=self.llm_tokenizer,
                rng=rng,
                shuffle=self.shuffle_options,
            )
        message = ""
        if self.time_message and record.media_type == "video":
            if sample.get("seconds") is None:
                raise ValueError(f"{record.path}: the time message needs the reader's frame times (`seconds`)")
            message = frame_time_message(sample["seconds"])
        return build_conversation(
            {"QA": list(record.qa)},
            self.template,
            record.media_type,
            system=self.system,
            time_message=message,
            tokenizer=self.llm_tokenizer,
            rng=rng,
        )

    def caption_batch(self, samples: list[dict], rng: random.Random) -> dict:
        """A batch of captions the way the original's stage 2 builds it (see `tokenize_caption_batch`)."""
        request = caption_request(self.template, samples[0]["media_type"], self.caption_prompt_set, rng)
        return tokenize_caption_batch(
            request,
            [s["record"].caption for s in samples],
            self.llm_tokenizer,
            self.template,
            self.max_length,
            self.caption_padding_side,
            self.caption_mask_pad_id,
        )

    def __call__(self, samples: list[dict]) -> dict:
        return self.collate(samples, random.Random(random.getrandbits(64)))

    def collate(self, samples: list[dict], rng: random.Random) -> dict:
        """The batch, with every random choice (caption request, turn order, option order) drawn from `rng`."""
        captions = all(s["record"].caption is not None for s in samples)
        if captions and self.template in CAPTION_FORMATS:
            batch = {**_common(samples), **self.caption_batch(samples, rng)}
            instructions = [""] * len(samples)
        else:
            conversations = [self.conversation(s, rng) for s in samples]
            tokens = [tokenize_conversation(c, self.llm_tokenizer, self.max_length) for c in conversations]
            batch = {
                **_common(samples),
                "input_ids_before": [t["input_ids_before"] for t in tokens],
                "input_ids_after": [t["input_ids_after"] for t in tokens],
                "labels_after": [t["labels_after"] for t in tokens],
            }
            instructions = [c.instruction for c in conversations]
        if self.qformer_tokenizer is not None:
            text = self.qformer_tokenizer(
                instructions,
                padding="longest",
                truncation=True,
                max_length=self.qformer_max_length,
                return_tensors="pt",
            )
            batch["instruction_ids"], batch["instruction_mask"] = text["input_ids"], text["attention_mask"]
        return batch
