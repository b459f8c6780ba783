"""Numerical parity with the original stage-3 Vicuna model (tiny sizes, official checkpoint layout).

The recorded run fed the original `VideoChat2_it_vicuna` two training conversations and one inference prompt.
Here the same tiny model is built from our classes, loaded from the official-layout checkpoint through
`official_to_ours`, and fed by our own collator configured by the paper recipe
(`experiment=videochat2_vicuna7b_stage3`): the frame-time message comes from the recipe's `data.time_message`
and the frame times a reader returns, the BOS quirk from its `model.bos_quirk`; the recorded per-piece token
ids only check that path's tokenization. Logits of right-padding positions are compared separately: they depend on
what fills the padding (the original: the pad embedding at counting positions), which no loss or score reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from datamodules.conversation import conversation_collator
from tests.parity.test_stage3_families_parity import bert_tokenizer
from tests.unit.test_configs import compose_train
from videochat2.checkpoints import initialise, official_to_ours, read_state_dict
from videochat2.data.conversation import tokenize_conversation
from videochat2.data.formats import MediaRecord
from videochat2.models.llm import LLMConfig, build_llm
from videochat2.models.qformer import QFormerConfig
from videochat2.models.videochat2 import VideoChat2, VideoChat2Config
from videochat2.models.vision import VisionConfig

DATA = Path(__file__).parents[1] / "data" / "parity" / "stage3_vicuna"
TOL = 1e-5
RECIPE = "experiment=videochat2_vicuna7b_stage3"
# The frame times a reader returns for the recorded clip (8 frames of an 8 s video at 1 fps, middle of each).
SECONDS = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5]
# The instruction records behind the two recorded conversations (the original shuffled CAT into this order).
RECORDS = [
    {"QA": [{"i": "Answer the question briefly.", "q": "What is the man doing?", "a": "He is riding a bike."}]},
    {
        "QA": [
            {"i": "", "q": "Describe the video.", "a": "A cat sits on a red sofa."},
            {"i": "", "q": "What color is the sofa?", "a": "Red."},
        ]
    },
]


def build_from_record(record: dict, bos_quirk: bool = True) -> tuple[VideoChat2, object]:
    model_cfg, bert = record["model_config"], record["bert_config"]
    vit = model_cfg["vision_encoder"]
    vision = VisionConfig(
        img_size=vit["img_size"],
        patch_size=vit["patch_size"],
        embed_dim=vit["encoder_embed_dim"],
        depth=vit["encoder_depth"],
        num_heads=vit["encoder_num_heads"],
        tubelet_size=vit["tubelet_size"],
        return_index=vit["return_index"],
        drop_path_rate=vit["drop_path_rate"],
        ckpt_num_frame=vit["ckpt_num_frame"],
    )
    qformer = QFormerConfig(
        vocab_size=record["qformer_tokenizer_len"],
        hidden_size=bert["hidden_size"],
        num_layers=bert["num_hidden_layers"],
        num_heads=bert["num_attention_heads"],
        intermediate_size=bert["intermediate_size"],
        max_position_embeddings=bert["max_position_embeddings"],
        encoder_width=vit["encoder_embed_dim"],
        num_query_tokens=model_cfg["num_query_token"],
        layer_norm_eps=bert["layer_norm_eps"],
        pad_token_id=bert["pad_token_id"],
    )
    llm_config = LLMConfig(
        preset="vicuna7b_v0",
        path=str(DATA / "llm_base"),
        lora=model_cfg["use_lora"],
        lora_r=model_cfg["lora_r"],
        lora_alpha=model_cfg["lora_alpha"],
        lora_dropout=model_cfg["lora_dropout"],
    )
    llm, tokenizer = build_llm(llm_config)
    config = VideoChat2Config(
        num_query=model_cfg["num_query_token"] + model_cfg["extra_num_query_token"],
        num_base_query=model_cfg["num_query_token"],
        qformer_text_input=model_cfg["qformer_text_input"],
        bos_quirk=bos_quirk,
    )
    return VideoChat2(config, vision, qformer, llm), tokenizer


@pytest.fixture(scope="module")
def recipe():
    return compose_train([RECIPE])


@pytest.fixture(scope="module")
def parity(recipe):
    record = json.loads((DATA / "outputs.json").read_text())
    model, tokenizer = build_from_record(record, recipe.model.bos_quirk)
    report = initialise(
        model,
        [("official_like", official_to_ours(read_state_dict(DATA / "official_like.pth")))],
        allowed_missing=("llm.",),
    )
    # Only the frozen base LLM (from llm_base/) may be left out; the checkpoint supplies the LoRA adapters.
    assert report.allowed_missing and all(k.startswith("llm.") and "lora_" not in k for k in report.allowed_missing)
    return model.eval(), tokenizer, load_file(DATA / "outputs.safetensors"), record


@pytest.fixture(scope="module")
def collator(parity, recipe):
    _, tokenizer, _, _ = parity
    return conversation_collator(recipe.data, tokenizer, "vicuna_v0", bert_tokenizer(DATA.parent))


@pytest.fixture(scope="module")
def encoded(parity, collator):
    _, tokenizer, out, record = parity
    samples = [
        {"record": MediaRecord(path=f"{i}", media_type="video", qa=tuple(r["QA"])), "seconds": SECONDS}
        for i, r in enumerate(RECORDS)
    ]
    # The recorded order of the turns is given (the original drew it), so no rng re-draws it here.
    conversations = [collator.conversation(sample, None) for sample in samples]
    max_length = record["model_config"]["max_txt_len"]
    return conversations, [tokenize_conversation(c, tokenizer, max_length) for c in conversations]


def test_qformer_instruction_is_right_padded_as_the_original(parity, encoded, collator):
    _, _, out, _ = parity
    text = collator.qformer_tokenizer(
        [c.instruction for c in encoded[0]], padding="longest", truncation=True, return_tensors="pt"
    )
    assert torch.equal(text["input_ids"], out["in.qformer_input_ids"])
    assert torch.equal(text["attention_mask"], out["in.qformer_attention_mask"])


@pytest.fixture(scope="module")
def train(parity, encoded):
    model, _, out, _ = parity
    tokens = encoded[1]
    with torch.no_grad():
        return model(
            out["in.video"],
            [t["input_ids_before"] for t in tokens],
            [t["input_ids_after"] for t in tokens],
            [t["labels_after"] for t in tokens],
            out["in.qformer_input_ids"],
            out["in.qformer_attention_mask"],
        )


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=TOL, rtol=0)


def test_conversations_and_tokens_are_the_originals(parity, encoded):
    _, tokenizer, out, record = parity
    conversations, tokens = encoded
    assert [c.text.replace(c.placeholder, "") for c in conversations] == record["conversations"]
    assert [c.instruction for c in conversations] == record["instructions"]
    for i, t in enumerate(tokens):
        assert t["input_ids_before"].tolist() == [tokenizer.bos_token_id] + out[f"p_before_ids.{i}"].tolist()
        assert t["input_ids_after"].tolist() == out[f"p_after_ids.{i}"].tolist()


@torch.no_grad()
def test_visual_tokens(parity):
    model, _, out, _ = parity
    close(
        model.encode_visual(out["in.video"], out["in.qformer_input_ids"], out["in.qformer_attention_mask"]),
        out["img_embeds"],
    )


def test_training_labels_are_exact(train, parity):
    assert torch.equal(train["labels"], parity[2]["train.labels"])


@torch.no_grad()
def test_training_inputs_mask_logits_and_loss(train, parity, encoded):
    model, _, out, record = parity
    tokens = encoded[1]
    batch = model.build_inputs(
        out["img_embeds"],
        [t["input_ids_before"] for t in tokens],
        [t["input_ids_after"] for t in tokens],
        bos_quirk=model.config.bos_quirk,
    )
    assert torch.equal(batch["attention_mask"], out["train.attention_mask"])
    real = out["train.attention_mask"].bool()
    close(batch["inputs_embeds"][real], out["train.inputs_embeds"][real])
    close(train["logits"][real], out["train.logits"][real])
    close(train["loss"], out["train.loss"])
    assert train["loss"].item() == pytest.approx(record["train_loss"], abs=TOL)


@torch.no_grad()
def test_recorded_inputs_give_every_logit_padding_included(parity):
    """With the original's filler (pad embedding, positions 0..L-1) the LLM and mask agree on padding too."""
    model, _, out, _ = parity
    assert not out["train.attention_mask"].all()
    logits = model.llm(inputs_embeds=out["train.inputs_embeds"], attention_mask=out["train.attention_mask"]).logits
    close(logits, out["train.logits"])


@torch.no_grad()
def test_inference_prompt(parity):
    model, tokenizer, out, record = parity
    before, after = record["infer_prompt"].split("<VideoHere>")
    ids_before = torch.tensor([tokenizer.bos_token_id] + tokenizer(before, add_special_tokens=False)["input_ids"])
    ids_after = torch.tensor(tokenizer(after, add_special_tokens=False)["input_ids"])
    assert ids_before.tolist() == out["infer.seg0_ids"][0].tolist()
    assert ids_after.tolist() == out["infer.seg1_ids"][0].tolist()
    instruction = out["infer.qformer_input_ids"]
    prompt = dict(
        pixel_values=out["in.video"][:1],
        input_ids_before=[ids_before],
        input_ids_after=[ids_after],
        instruction_ids=instruction,
        instruction_mask=torch.ones_like(instruction),
    )
    visual = model.encode_visual(prompt["pixel_values"], instruction, prompt["instruction_mask"])
    close(visual, out["infer.img_embeds"])
    batch = model.build_inputs(visual, [ids_before], [ids_after], padding_side="left")
    close(batch["inputs_embeds"], out["infer.inputs_embeds"])
    close(model.llm(**batch).logits, out["infer.logits"])
    close(model.next_token_logits(**prompt), out["infer.logits"][:, -1])


def test_official_names_map_to_ours():
    weight = torch.zeros(1)
    state = {
        "mistral_proj.bias": weight,
        "phi_model.base_model.model.lm_head.lora_A.default.weight": weight,
        "llama_model.base_model.model.model.layers.0.self_attn.rotary_emb.inv_freq": weight,
        "qformer.bert.embeddings.LayerNorm.bias": weight,
    }
    assert sorted(official_to_ours(state)) == [
        "llm.base_model.model.lm_head.lora_A.default.weight",
        "llm_proj.bias",
        "qformer.bert.embeddings.LayerNorm.bias",
    ]
