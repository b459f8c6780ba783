"""Numerical parity with the original stage-3 Mistral and Phi-3 classes (LoRA; tiny sizes, official layout).

The recorded runs fed `VideoChat2_it_mistral` / `VideoChat2_it_phi` two instruction samples built by the
original datasets, then an inference-style prompt as the demos build it. Here the batch comes from our own
collator configured by the family's paper recipe (`experiment=videochat2_<family>_stage3`): conversation
format (no frame-time message for these families), QA order drawn with the original's python seed, the
Q-Former instruction padded on the left, the answer masks; the BOS quirk is the recipe's `model.bos_quirk`.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import BertTokenizer

from datamodules.conversation import conversation_collator
from tests.parity.original_sets import ROOT, close, load_set
from tests.unit.test_configs import compose_train
from videochat2.data.conversation import leading_special_ids
from videochat2.data.formats import MediaRecord
from videochat2.models.llm import PRESETS as LLM_PRESETS

SETS = {
    "mistral": ("stage3_mistral", "videochat2_mistral7b_stage3"),
    "phi3": ("stage3_phi3", "videochat2_phi3_stage3"),
}


def bert_tokenizer(root: Path) -> BertTokenizer:
    """The recorded sets' WordPiece vocabulary with the Q-Former's `[DEC]`, as `load_qformer_tokenizer` adds it."""
    tokenizer = BertTokenizer(vocab=str(root / "tokenizers" / "bert_vocab.txt"), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


@pytest.fixture(scope="module", params=sorted(SETS))
def recorded(request):
    name, experiment = SETS[request.param]
    cfg = compose_train([f"experiment={experiment}"])
    model, tokenizer, out, record = load_set(name, request.param, bos_quirk=cfg.model.bos_quirk)
    template = LLM_PRESETS[cfg.model.llm.preset].template
    collator = conversation_collator(cfg.data, tokenizer, template, bert_tokenizer(ROOT))
    samples = [
        {
            "pixel_values": frames,
            "record": MediaRecord(path=f"{i}", media_type="video", qa=tuple(qa)),
            "idx": i,
            "media_type": "video",
            "skipped": [],
            "seconds": [0.5 + t for t in range(frames.shape[0])],
        }
        for i, (frames, qa) in enumerate(zip(out["in.video"], record["qa"]))
    ]
    rng = random.Random(record["data_wiring"]["python_random_seed"])
    conversations = [collator.conversation(s, rng) for s in samples]
    batch = collator.collate(samples, random.Random(record["data_wiring"]["python_random_seed"]))
    return model, collator, out, record, conversations, batch


def test_conversations_and_qformer_text_are_the_originals(recorded):
    _, _, out, record, conversations, batch = recorded
    assert [c.text.replace(c.placeholder, "") for c in conversations] == record["conversations"]
    assert [c.instruction for c in conversations] == record["instructions"]
    assert torch.equal(batch["instruction_ids"], out["in.qformer_input_ids"])
    queries = out["in.qformer_attention_mask"].shape[1] - out["in.qformer_input_ids"].shape[1]
    assert torch.equal(batch["instruction_mask"], out["in.qformer_attention_mask"][:, queries:])


def test_llm_tokens_are_the_originals(recorded):
    _, collator, out, _, _, batch = recorded
    bos = collator.llm_tokenizer.bos_token_id
    for i, (before, after) in enumerate(zip(batch["input_ids_before"], batch["input_ids_after"])):
        assert before.tolist() == [bos] + out[f"p_before_ids.{i}"].tolist()
        assert after.tolist() == out[f"p_after_ids.{i}"].tolist()


@torch.no_grad()
def test_training_inputs_labels_logits_and_loss(recorded):
    model, _, out, record, _, batch = recorded
    result = model(
        batch["pixel_values"],
        batch["input_ids_before"],
        batch["input_ids_after"],
        batch["labels_after"],
        batch["instruction_ids"],
        batch["instruction_mask"],
    )
    assert torch.equal(result["labels"], out["train.labels"])
    visual = model.encode_visual(batch["pixel_values"], batch["instruction_ids"], batch["instruction_mask"])
    close(visual, out["img_embeds"])
    inputs = model.build_inputs(
        visual, batch["input_ids_before"], batch["input_ids_after"], bos_quirk=model.config.bos_quirk
    )
    assert torch.equal(inputs["attention_mask"], out["train.attention_mask"])
    real = out["train.attention_mask"].bool()
    close(inputs["inputs_embeds"][real], out["train.inputs_embeds"][real])
    close(result["logits"][real], out["train.logits"][real])
    close(result["loss"], out["train.loss"])
    assert result["loss"].item() == pytest.approx(record["train_loss"], abs=1e-5)


@torch.no_grad()
def test_inference_prompt(recorded):
    """The demos' prompt: BOS only where the tokenizer adds one (Mistral yes, Phi-3 no), the real embedding."""
    model, collator, out, record, _, _ = recorded
    tokenizer = collator.llm_tokenizer
    before, after = record["infer_prompt"].split("<VideoHere>")
    ids_before = torch.tensor(leading_special_ids(tokenizer) + tokenizer(before, add_special_tokens=False)["input_ids"])
    ids_after = torch.tensor(tokenizer(after, add_special_tokens=False)["input_ids"])
    assert ids_before.tolist() == out["infer.seg0_ids"][0].tolist()
    assert ids_after.tolist() == out["infer.seg1_ids"][0].tolist()
    text = collator.qformer_tokenizer([record["infer_instruction"]], return_tensors="pt")
    assert text["input_ids"].tolist() == out["infer.qformer_input_ids"].tolist()
    prompt = dict(
        pixel_values=out["in.video"][:1],
        input_ids_before=[ids_before],
        input_ids_after=[ids_after],
        instruction_ids=text["input_ids"],
        instruction_mask=text["attention_mask"],
    )
    close(model.encode_visual(out["in.video"][:1], text["input_ids"], text["attention_mask"]), out["infer.img_embeds"])
    close(model.next_token_logits(**prompt), out["infer.logits"][:, -1])
