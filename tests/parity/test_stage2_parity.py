"""Numerical parity with the original stage-2 classes (Vicuna, Mistral, Phi-3; tiny sizes, official layout).

Each recorded set fed the original `VideoChat2_pt_<llm>.forward(media, captions)` a video batch and an image
batch. Here our model is loaded from the official-layout checkpoint, and the batch comes from our own
collator configured by the family's paper recipe (`experiment=videochat2_<family>_stage2`): the caption
request drawn per batch from the official list, the caption tokenized apart from the request and cut to the
recipe's `max_txt_len`, the family's padding side and the pad-id label mask. Nothing about the layout is set
here, so a recipe or collator that drifts from the original fails these tests.
"""

from __future__ import annotations

import random

import pytest
import torch

from datamodules.conversation import conversation_collator
from tests.parity.original_sets import close, load_set
from tests.unit.test_configs import compose_train
from videochat2.data.formats import MediaRecord
from videochat2.models.llm import PRESETS as LLM_PRESETS

SETS = {
    "vicuna": ("stage2_vicuna", "videochat2_vicuna7b_stage2"),
    "mistral": ("stage2_mistral", "videochat2_mistral7b_stage2"),
    "phi3": ("stage2_phi3", "videochat2_phi3_stage2"),
}
BATCHES = {"train": ("in.video", "video", "img_embeds"), "train_image": ("in.image", "image", "image.img_embeds")}


@pytest.fixture(scope="module", params=sorted(SETS))
def recorded(request):
    name, experiment = SETS[request.param]
    model, tokenizer, out, record = load_set(name, request.param)
    cfg = compose_train([f"experiment={experiment}"])
    collator = conversation_collator(cfg.data, tokenizer, LLM_PRESETS[cfg.model.llm.preset].template)
    assert cfg.data.max_txt_len == record["max_txt_len"]
    return model, collator, out, record


def collate(collator, out: dict, record: dict, part: str) -> dict:
    """Our batch of the recorded captions, the request drawn with the python seed the original used."""
    pixels, media_type, _ = BATCHES[part]
    samples = [
        {
            "pixel_values": frames,
            "record": MediaRecord(path=f"{i}", media_type=media_type, caption=caption),
            "idx": i,
            "media_type": media_type,
            "skipped": [],
        }
        for i, (frames, caption) in enumerate(zip(out[pixels], record[part]["captions"]))
    ]
    return collator.caption_batch(samples, random.Random(record[part]["python_random_seed"]))


@pytest.mark.parametrize("part", sorted(BATCHES))
def test_tokens_are_the_originals(recorded, part):
    _, collator, out, record = recorded
    batch = collate(collator, out, record, part)
    before, after = out[f"{part}.prompt_before_ids"], out[f"{part}.prompt_after_ids"]
    text, text_mask = out[f"{part}.text_input_ids"], out[f"{part}.text_attention_mask"]
    bos = collator.llm_tokenizer.bos_token_id
    for i in range(len(batch["input_ids_before"])):
        assert batch["input_ids_before"][i].tolist() == [bos] + before.tolist()
        assert batch["input_ids_after"][i].tolist() == after.tolist() + text[i].tolist()
        assert batch["attention_after"][i].tolist() == [1] * len(after) + text_mask[i].tolist()


@pytest.mark.parametrize("part", sorted(BATCHES))
@torch.no_grad()
def test_inputs_mask_labels_and_loss(recorded, part):
    model, collator, out, record = recorded
    batch = collate(collator, out, record, part)
    pixels, _, visual_key = BATCHES[part]
    visual = model.encode_visual(out[pixels])
    close(visual, out[visual_key])
    inputs = model.build_inputs(
        visual,
        batch["input_ids_before"],
        batch["input_ids_after"],
        batch["labels_after"],
        attention_after=batch["attention_after"],
    )
    assert torch.equal(inputs["attention_mask"], out[f"{part}.attention_mask"])
    assert torch.equal(inputs["labels"], out[f"{part}.labels"])
    real = out[f"{part}.attention_mask"].bool()
    close(inputs["inputs_embeds"][real], out[f"{part}.inputs_embeds"][real])
    result = model(
        out[pixels],
        batch["input_ids_before"],
        batch["input_ids_after"],
        batch["labels_after"],
        attention_after=batch["attention_after"],
    )
    close(result["loss"], out[f"{part}.loss"])
    assert result["loss"].item() == pytest.approx(record[part]["loss"], abs=1e-5)
    if f"{part}.logits" in out:
        close(result["logits"][real], out[f"{part}.logits"][real])


def test_the_recorded_quirks_are_what_the_collator_reproduces(recorded):
    """Mistral never learns `</s>` (pad = eos); Phi-3 pads captions on the left; long captions are cut."""
    _, collator, out, record = recorded
    batch = collate(collator, out, record, "train")
    after = len(out["train.prompt_after_ids"])
    captions = [int(mask[after:].sum()) for mask in batch["attention_after"]]
    assert max(captions) == min(record["max_txt_len"], out["train.text_input_ids"].shape[1])
    # The first caption is never cut: its last real token is the end symbol, learned unless it is the pad id.
    mask, labels = batch["attention_after"][0], batch["labels_after"][0]
    last = int(mask.nonzero().max())
    assert (labels[last] != -100).item() is not record["end_sym_is_pad"]
    assert (mask[after] == 0).item() is (record["train"]["padding_side"] == "left")
