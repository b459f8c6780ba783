"""Q-Former: attention-mode semantics, layer layout, tied head, caption loss, building from a local BERT."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from videochat2.models.qformer import QFormer, QFormerConfig


def tiny_config(**overrides) -> QFormerConfig:
    values = dict(
        hidden_size=32,
        num_layers=3,
        num_heads=4,
        intermediate_size=48,
        encoder_width=24,
        num_query_tokens=4,
        max_position_embeddings=16,
    )
    values.update(overrides)
    return QFormerConfig.tiny(vocab_size=50, **values)


@pytest.fixture
def qformer() -> QFormer:
    torch.manual_seed(0)
    return QFormer(tiny_config()).eval()


@pytest.fixture
def inputs():
    torch.manual_seed(1)
    queries = torch.randn(2, 4, 32)
    vision = torch.randn(2, 6, 24)
    ids = torch.randint(1, 49, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return queries, vision, ids, mask


def test_layer_layout_and_names(qformer):
    layers = qformer.bert.encoder.layer
    assert [layer.has_cross_attention for layer in layers] == [True, False, True]
    keys = set(qformer.state_dict())
    assert "bert.encoder.layer.0.crossattention.self.key.weight" in keys
    assert "bert.encoder.layer.1.crossattention.self.key.weight" not in keys
    assert qformer.state_dict()["bert.encoder.layer.0.crossattention.self.key.weight"].shape == (32, 24)
    for name in (
        "intermediate_query.dense.weight",
        "output_query.LayerNorm.bias",
        "intermediate.dense.bias",
        "output.dense.weight",
        "attention.output.LayerNorm.weight",
    ):
        assert f"bert.encoder.layer.1.{name}" in keys
    assert "bert.embeddings.position_ids" in keys
    assert not any("token_type" in k or "pooler" in k for k in keys)


def test_lm_head_is_tied(qformer):
    head = qformer.cls.predictions
    assert head.decoder.weight is qformer.bert.embeddings.word_embeddings.weight
    assert head.decoder.bias is head.bias
    keys = set(qformer.state_dict())
    assert {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "cls.predictions.bias"} <= keys


def test_query_only_output_does_not_see_text(qformer, inputs):
    queries, vision, ids, mask = inputs
    alone = qformer.bert(query_embeds=queries, encoder_hidden_states=vision)
    assert alone.shape == (2, 4, 32)
    joint = qformer.bert(ids, mask, queries, vision)
    assert joint.shape == (2, 11, 32)
    assert not torch.allclose(joint[:, :4], alone, atol=1e-4), "bidirectional queries must see the text"


def test_caption_mode_queries_ignore_text_and_text_is_causal(qformer, inputs):
    queries, vision, ids, mask = inputs
    alone = qformer.bert(query_embeds=queries, encoder_hidden_states=vision)
    out = qformer.bert(ids, mask, queries, vision, causal=True)
    torch.testing.assert_close(out[:, :4], alone, atol=1e-5, rtol=1e-5)
    changed = ids.clone()
    changed[:, 3:] = (changed[:, 3:] + 7) % 49 + 1
    out2 = qformer.bert(changed, mask, queries, vision, causal=True)
    torch.testing.assert_close(out2[:, :4], out[:, :4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out2[:, 4 : 4 + 3], out[:, 4 : 4 + 3], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out2[0, 4 + 3 :], out[0, 4 + 3 :], atol=1e-4)


def test_caption_mode_text_sees_the_queries(qformer, inputs):
    queries, vision, ids, mask = inputs
    out = qformer.bert(ids, mask, queries, vision, causal=True)
    out2 = qformer.bert(ids, mask, torch.randn_like(queries), vision, causal=True)
    assert not torch.allclose(out[:, 4], out2[:, 4], atol=1e-4)


def test_text_only_mode_is_bidirectional_and_ignores_padding(qformer, inputs):
    _, _, ids, mask = inputs
    out = qformer.bert(ids, mask)
    changed = ids.clone()
    changed[0, 6] = (changed[0, 6] % 48) + 1
    out2 = qformer.bert(changed, mask)
    assert not torch.allclose(out[0, 0], out2[0, 0], atol=1e-4), "token 0 must see later tokens"
    padded = ids.clone()
    padded[1, 5:] = 3
    out3 = qformer.bert(padded, mask)
    torch.testing.assert_close(out3[1, :5], out[1, :5], atol=1e-5, rtol=1e-5)


def test_too_long_text_fails_clearly(qformer):
    with pytest.raises(ValueError, match="exceeds the 16 positions"):
        qformer.bert(torch.ones(1, 17, dtype=torch.long))


def test_queries_without_vision_fail_clearly(qformer, inputs):
    queries, _, _, _ = inputs
    with pytest.raises(ValueError, match="vision"):
        qformer.bert(query_embeds=queries)


def test_caption_loss_matches_hand_computation(qformer, inputs):
    queries, vision, ids, mask = inputs
    labels = ids.masked_fill(mask == 0, -100)
    loss = qformer.caption_loss(ids, mask, queries, vision, labels, label_smoothing=0.1)
    logits = qformer.cls(qformer.bert(ids, mask, queries, vision, causal=True)[:, 4:])
    terms = []
    for b in range(2):
        for t in range(6):
            target = labels[b, t + 1].item()
            if target == -100:
                continue
            logp = F.log_softmax(logits[b, t], dim=-1)
            terms.append(0.9 * -logp[target] + 0.1 * -logp.mean())
    torch.testing.assert_close(loss, torch.stack(terms).mean())


def test_drop_path_rates_grow_linearly():
    model = QFormer(tiny_config(drop_path_rate=0.2))
    rates = [layer.output.drop_path.rate for layer in model.bert.encoder.layer]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    assert model.bert.encoder.layer[2].attention.output.drop_path.rate == pytest.approx(0.2)


def test_presets():
    base = QFormerConfig.bert_base()
    assert (base.hidden_size, base.num_layers, base.num_heads, base.intermediate_size) == (768, 12, 12, 3072)
    assert (base.vocab_size, base.dec_token_id, base.encoder_width, base.cross_attention_freq) == (
        30523,
        30522,
        1024,
        2,
    )
    tiny = QFormerConfig.tiny(vocab_size=300)
    assert tiny.vocab_size == 300 and tiny.dec_token_id == 299


def test_from_local_bert_copies_weights_and_adds_dec(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=40,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=20,
        ),
        add_pooling_layer=True,
    )
    bert.save_pretrained(tmp_path / "bert")
    model = QFormer.from_bert(tmp_path / "bert", encoder_width=24, num_query_tokens=4)
    cfg = model.config
    assert (cfg.vocab_size, cfg.dec_token_id, cfg.hidden_size, cfg.num_layers) == (41, 40, 32, 2)
    ours = model.bert.embeddings.word_embeddings.weight
    torch.testing.assert_close(ours[:40], bert.embeddings.word_embeddings.weight)
    assert ours.shape == (41, 32)
    assert model.cls.predictions.decoder.weight is ours
    layer, src = model.bert.encoder.layer[1], bert.encoder.layer[1]
    torch.testing.assert_close(layer.attention.self.query.weight, src.attention.self.query.weight)
    torch.testing.assert_close(layer.output.dense.weight, src.output.dense.weight)
    torch.testing.assert_close(layer.intermediate_query.dense.weight, src.intermediate.dense.weight)
    torch.testing.assert_close(layer.output_query.LayerNorm.weight, src.output.LayerNorm.weight)
    torch.testing.assert_close(
        model.bert.embeddings.position_embeddings.weight, bert.embeddings.position_embeddings.weight
    )
    assert model.bert.encoder.layer[0].crossattention.self.key.weight.shape == (32, 24)


def test_from_missing_bert_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="no BERT checkpoint at"):
        QFormer.from_bert(tmp_path / "absent")
