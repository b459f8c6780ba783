"""The stage-2/3 collator: the original's text handling (caption requests, budgets, padding sides, masks)."""

from __future__ import annotations

import random

import pytest
import torch

from tests.parity.original_sets import ROOT
from tests.parity.test_stage3_families_parity import bert_tokenizer
from videochat2.data.collators import ConversationCollator
from videochat2.data.conversation import caption_prompts, caption_request
from videochat2.data.formats import MediaRecord
from videochat2.models.llm import load_tokenizer

CAPTIONS = ["A cat.", "A red cat sleeps on the blue sofa while two dogs run in the park at night."]


@pytest.fixture(scope="module")
def phi3():
    return load_tokenizer(ROOT / "stage2_phi3" / "llm_base")


@pytest.fixture(scope="module")
def mistral():
    return load_tokenizer(ROOT / "stage2_mistral" / "llm_base")


def sample(media_type: str = "video", caption: str | None = None, qa=(), seconds=None) -> dict:
    record = MediaRecord(path="x", media_type=media_type, caption=caption, qa=tuple(qa))
    frames = 1 if media_type == "image" else 2
    return {
        "pixel_values": torch.zeros(frames, 3, 4, 4),
        "record": record,
        "idx": 0,
        "media_type": media_type,
        "skipped": [],
        "seconds": seconds,
    }


def captions(*texts: str, media_type: str = "video") -> list[dict]:
    return [sample(media_type, caption=text) for text in texts]


def request_text(tokenizer, batch: dict, row: int) -> str:
    """The decoded request around the visual tokens (the caption's real tokens removed)."""
    after = batch["input_ids_after"][row][batch["labels_after"][row] == -100]
    after = after[batch["attention_after"][row][: len(after)] == 1]
    return tokenizer.decode(batch["input_ids_before"][row][1:]) + "|" + tokenizer.decode(after)


def test_one_official_request_per_batch(phi3):
    collator = ConversationCollator(phi3, "phi3", 32, caption_prompt_set="official")
    official = caption_prompts("video", "official")
    seen = set()
    for seed in range(12):
        batch = collator.collate(captions(*CAPTIONS, "Two dogs."), random.Random(seed))
        assert all(torch.equal(b, batch["input_ids_before"][0]) for b in batch["input_ids_before"])
        seen.add(request_text(phi3, batch, 0))
    assert len(seen) > 3
    phrasings = [p.split("</Video> ")[1] for p in official]
    assert all(sum(phrase in text for phrase in phrasings) == 1 for text in seen)
    assert len(caption_prompts("video", "official")) == len(caption_prompts("image", "official")) == 11


def test_caption_budget_counts_the_caption_only(phi3):
    batch = ConversationCollator(phi3, "phi3", 8).collate(captions(*CAPTIONS), random.Random(0))
    request = caption_request("phi3", "video", "ours", random.Random(0))  # the collator's first draw
    prompt = len(phi3(request.split("<VideoHere>")[1], add_special_tokens=False)["input_ids"])
    assert len(batch["input_ids_after"][0]) == prompt + 8  # the long caption is cut to the budget
    for mask in batch["attention_after"]:
        assert mask[:prompt].all() and int(mask[prompt:].sum()) <= 8


def test_phi3_pads_captions_on_the_left_unless_told(phi3):
    short_row = 0
    for side, gap_first in ((None, True), ("right", False)):
        collator = ConversationCollator(phi3, "phi3", 32, caption_padding_side=side)
        batch = collator.collate(captions(*CAPTIONS), random.Random(0))
        mask = batch["attention_after"][short_row]
        first_gap = int((mask == 0).nonzero().min())
        assert (int(mask[first_gap:].sum()) > 0) is gap_first  # real caption tokens after the gap: left padding


@pytest.mark.parametrize("mask_pad_id", [True, False])
def test_mistral_end_token_is_the_pad_and_is_unlearned_like_the_original(mistral, mask_pad_id):
    collator = ConversationCollator(mistral, "mistral_instruct", 32, caption_mask_pad_id=mask_pad_id)
    batch = collator.collate(captions("A cat.", "Two dogs run."), random.Random(0))
    mask, labels = batch["attention_after"][0], batch["labels_after"][0]
    last = int(mask.nonzero().max())
    assert batch["input_ids_after"][0][last] == mistral.eos_token_id == mistral.pad_token_id
    assert (labels[last] == -100).item() is mask_pad_id
    assert (labels[mask == 0] == -100).all()


def test_qformer_instruction_is_padded_and_cut_on_the_family_side(mistral):
    qa = [{"i": "watch the video and answer the question", "q": "what?", "a": "a cat."}]
    short = [{"i": "watch", "q": "what?", "a": "a cat."}]
    bert = bert_tokenizer(ROOT)
    words = bert(qa[0]["i"], add_special_tokens=False)["input_ids"]
    for template, side in (("mistral_instruct", "left"), ("vicuna_v0", "right")):
        collator = ConversationCollator(mistral, template, 128, bert, qformer_max_length=6)
        batch = collator.collate([sample(qa=qa), sample(qa=short)], random.Random(0))
        long_ids, short_mask = batch["instruction_ids"][0].tolist(), batch["instruction_mask"][1].tolist()
        assert long_ids[0] == bert.cls_token_id and long_ids[-1] == bert.sep_token_id and len(long_ids) == 6
        # Vicuna's Q-Former also reads the question, so compare the kept end of the instruction only.
        if side == "left":
            assert long_ids[1:5] == words[-4:] and short_mask[0] == 0 and short_mask[-1] == 1
        else:
            assert long_ids[1:5] == words[:4] and short_mask[0] == 1 and short_mask[-1] == 0
    assert bert.padding_side == "right"  # the collator pads a private copy


def test_time_message_comes_from_the_reader_times(mistral):
    qa = [{"i": "", "q": "What happens?", "a": "A cat sleeps."}]
    collator = ConversationCollator(mistral, "vicuna_v0", 128, time_message=True)
    video = collator.conversation(sample(qa=qa, seconds=[0.5, 1.5, 2.25]), None)
    assert "<VideoHere></Video> The video contains 3 frames sampled at 0.5, 1.5, 2.2 seconds. ###Human:" in video.text
    image = collator.conversation(sample("image", qa=qa), None)
    assert "frames sampled" not in image.text
    with pytest.raises(ValueError, match="seconds"):
        collator.conversation(sample(qa=qa), None)
    plain = ConversationCollator(mistral, "vicuna_v0", 128).conversation(sample(qa=qa, seconds=[0.5]), None)
    assert "frames sampled" not in plain.text


def test_a_byte_level_tokenizer_keeps_the_space_before_a_caption_tokenized_apart():
    """SentencePiece captions bring their own word start; a byte-level one gets the template's space instead."""
    from tests.unit.test_eval_mvbench import char_tokenizer

    byte_level = char_tokenizer()
    batch = ConversationCollator(byte_level, "vicuna_v0", 64).collate(captions("A cat."), random.Random(0))
    caption = batch["input_ids_after"][0][batch["labels_after"][0] != -100]
    assert byte_level.decode(caption).startswith(" A cat.")
    assert not request_text(byte_level, batch, 0).endswith(" ")
