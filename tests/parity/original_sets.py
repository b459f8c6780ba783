"""Build our model from a recorded set of the original code (stage 2/3, any LLM family) and load its weights.

Shared by the stage-2 and stage-3 parity tests of the sets recorded after `stage1/` and `stage3_vicuna/`:
each `outputs.json` names the original's model config (ViT, Q-Former, LoRA) and the tiny LLM is a Hugging
Face directory `llm_base/` beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from videochat2.checkpoints import QFORMER_TEXT_PATH, MissingRule, initialise, official_to_ours, read_state_dict
from videochat2.models.llm import LLMConfig, build_llm
from videochat2.models.qformer import QFormerConfig
from videochat2.models.videochat2 import VideoChat2, VideoChat2Config
from videochat2.models.vision import VisionConfig

ROOT = Path(__file__).parents[1] / "data" / "parity"
TOL = 1e-5
PRESETS = {"vicuna": "vicuna7b_v0", "mistral": "mistral7b_instruct_v02", "phi3": "phi3_mini"}


def vision_config(model_cfg: dict) -> VisionConfig:
    vit = model_cfg["vision_encoder"]
    return VisionConfig(
        img_size=vit["img_size"],
        patch_size=vit["patch_size"],
        embed_dim=vit["encoder_embed_dim"],
        depth=vit["encoder_depth"],
        num_heads=vit["encoder_num_heads"],
        tubelet_size=vit["tubelet_size"],
        return_index=vit["return_index"],
        drop_path_rate=vit["drop_path_rate"],
        ckpt_num_frame=vit.get("ckpt_num_frame", 4),  # the original builder's default: UMT-L saw 4 frames
    )


def qformer_config(record: dict) -> QFormerConfig:
    """The Q-Former of stage 3 keeps its text embeddings (vocab + [DEC]); stage 2 has none (vocab unused)."""
    bert, model_cfg = record["bert_config"], record["model_config"]
    vocab = record.get("qformer_tokenizer", {}).get("len", bert["vocab_size"] + 1)
    return QFormerConfig(
        vocab_size=vocab,
        hidden_size=bert["hidden_size"],
        num_layers=bert["num_hidden_layers"],
        num_heads=bert["num_attention_heads"],
        intermediate_size=bert["intermediate_size"],
        max_position_embeddings=bert["max_position_embeddings"],
        encoder_width=model_cfg["vision_encoder"]["encoder_embed_dim"],
        num_query_tokens=model_cfg["num_query_token"],
        layer_norm_eps=bert["layer_norm_eps"],
        pad_token_id=bert["pad_token_id"],
    )


def load_set(name: str, family: str, bos_quirk: bool = False):
    """(model in eval mode, LLM tokenizer, recorded tensors, record) of one recorded set."""
    data = ROOT / name
    record = json.loads((data / "outputs.json").read_text())
    model_cfg = record["model_config"]
    lora = bool(model_cfg.get("use_lora", False))
    llm_config = LLMConfig.from_preset(
        PRESETS[family],
        path=str(data / "llm_base"),
        dtype="float32",
        attn_implementation="eager",
        lora=lora,
        lora_r=model_cfg.get("lora_r", 16),
        lora_alpha=model_cfg.get("lora_alpha", 32),
        lora_dropout=model_cfg.get("lora_dropout", 0.1),
    )
    llm, tokenizer = build_llm(llm_config)
    config = VideoChat2Config(
        num_query=model_cfg["num_query_token"] + model_cfg["extra_num_query_token"],
        num_base_query=model_cfg["num_query_token"],
        qformer_text_input=bool(model_cfg.get("qformer_text_input", False)),
        bos_quirk=bos_quirk,
    )
    model = VideoChat2(config, vision_config(model_cfg), qformer_config(record), llm)
    state = official_to_ours(read_state_dict(data / "official_like.pth"))
    # Only the frozen base LLM (from llm_base/) may be absent, and for stage 2 the unused Q-Former text path.
    allowed: list = ["llm."]
    if not config.qformer_text_input:
        allowed.append(MissingRule("unused Q-Former text path", QFORMER_TEXT_PATH))
    report = initialise(model, [("official_like", state)], allowed_missing=allowed)
    assert not any("lora_" in key for key in report.allowed_missing)
    return model.eval(), tokenizer, load_file(data / "outputs.safetensors"), record


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual, expected, atol=TOL, rtol=0)
