"""Numerical parity with the original stage-1 model (tiny sizes, weights in the official flat layout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from videochat2.models.alignment import AlignmentConfig, VideoChat2Alignment
from videochat2.models.qformer import QFormerConfig
from videochat2.models.vision import VisionConfig

DATA = Path(__file__).parents[1] / "data" / "parity" / "stage1"
TOL = 1e-5


def build_from_record(record: dict) -> VideoChat2Alignment:
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
    )
    qformer = QFormerConfig(
        vocab_size=record["tokenizer_len"],
        hidden_size=bert["hidden_size"],
        num_layers=bert["num_hidden_layers"],
        num_heads=bert["num_attention_heads"],
        intermediate_size=bert["intermediate_size"],
        max_position_embeddings=bert["max_position_embeddings"],
        encoder_width=vit["encoder_embed_dim"],
        num_query_tokens=model_cfg["qformer_num_query_tokens"],
        layer_norm_eps=bert["layer_norm_eps"],
        drop_path_rate=model_cfg["drop_path_rate"],
        dec_token_id=record["bos_token_id([DEC])"],
        pad_token_id=record["pad_token_id"],
    )
    criterion = record["criterion"]
    config = AlignmentConfig(
        embed_dim=model_cfg["embed_dim"],
        temp=model_cfg["temp"],
        agg_method=model_cfg["agg_method"],
        vtm_hard_neg=criterion["vtm_hard_neg"],
        vtm_cat_text_cls=criterion["vtm_cat_text_cls"],
        num_frames=vit["num_frames"],
    )
    return VideoChat2Alignment(config, vision, qformer)


@pytest.fixture(scope="module")
def parity():
    record = json.loads((DATA / "outputs.json").read_text())
    model = build_from_record(record)
    state = torch.load(DATA / "official_like.pth", weights_only=True, map_location="cpu")
    model.load_state_dict(state, strict=True)
    return model.eval(), load_file(DATA / "outputs.safetensors"), record


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=TOL, rtol=0)


def test_position_tables(parity):
    model, out, _ = parity
    encoder = model.vision_encoder.encoder
    grid = out["pos_embed"].shape[1] // 4
    side = int(grid**0.5)
    close(encoder.position_table(4, (side, side), False, "cpu", torch.float32), out["pos_embed"])
    close(encoder.position_table(1, (side, side), True, "cpu", torch.float32), out["img_pos_embed"])


@torch.no_grad()
def test_vision_path(parity):
    model, out, _ = parity
    close(model.vision_encoder(out["in.video"]), out["vit_out"])
    vision_embeds, query_embeds = model.encode_vision(out["in.video"])
    close(vision_embeds, out["vision_embeds"])
    close(query_embeds, out["vision_query_embeds"])
    image_embeds, image_queries = model.encode_vision(out["in.image"])
    close(image_embeds, out["image_vision_embeds"])
    close(image_queries, out["image_vision_query_embeds"])


@torch.no_grad()
def test_text_path(parity):
    model, out, _ = parity
    text_embeds, text_cls = model.encode_text(out["in.text_input_ids"], out["in.text_attention_mask"])
    close(text_embeds, out["text_embeds"])
    close(text_cls, out["text_cls"])


@torch.no_grad()
def test_losses(parity):
    model, out, record = parity
    losses = model(
        out["in.video"],
        out["in.text_input_ids"],
        out["in.text_attention_mask"],
        out["in.idx"],
        vision_neg_idx=out["vtm_vision_neg_idx"],
        text_neg_idx=out["vtm_text_neg_idx"],
    )
    close(losses["loss_vtc"], out["loss_vtc"])
    close(losses["loss_vtm"], out["loss_vtm"])
    close(losses["loss_vtg"], out["loss_cap"])
    assert losses["loss_vtg"].item() == pytest.approx(record["losses"]["loss_cap"], abs=TOL)


def test_state_dict_round_trip_has_no_extra_keys(parity):
    model, _, _ = parity
    state = torch.load(DATA / "official_like.pth", weights_only=True, map_location="cpu")
    assert set(model.state_dict()) == set(state)
