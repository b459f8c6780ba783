"""The stage-2/3 model: visual tokens spliced at the placeholder, padding invariance, query counts."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from videochat2.checkpoints import FRESH_QUERIES, CheckpointError, initialise, merged_queries
from videochat2.models.qformer import QFormerConfig
from videochat2.models.videochat2 import IGNORE_INDEX, VideoChat2, VideoChat2Config
from videochat2.models.vision import VisionConfig

VOCAB = 50


def tiny_llm() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def tiny_model(num_query: int = 6, **config) -> VideoChat2:
    torch.manual_seed(0)
    vision = VisionConfig.tiny(img_size=32, embed_dim=32, depth=3, num_heads=2)
    qformer = QFormerConfig.tiny(
        vocab_size=40,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        encoder_width=32,
        num_query_tokens=num_query,
    )
    cfg = VideoChat2Config(num_query=num_query, num_base_query=4, **config)
    return VideoChat2(cfg, vision, qformer, tiny_llm()).eval()


def prompts():
    before = [torch.tensor([1, 5, 6]), torch.tensor([1, 7])]
    after = [torch.tensor([8, 9, 10, 11]), torch.tensor([12])]
    labels = [torch.tensor([IGNORE_INDEX, 9, 10, 11]), torch.tensor([12])]
    return before, after, labels


def test_visual_tokens_sit_where_the_placeholder_was():
    model = tiny_model()
    visual = torch.randn(2, 6, 32)
    before, after, labels = prompts()
    batch = model.build_inputs(visual, before, after, labels)
    embeds, mask = batch["inputs_embeds"], batch["attention_mask"]
    assert embeds.shape == (2, 3 + 6 + 4, 32)
    assert torch.equal(embeds[0, 3:9], visual[0])
    assert torch.equal(embeds[1, 2:8], visual[1])
    assert torch.equal(embeds[1, 8], model.embed_tokens(torch.tensor(12)))
    assert mask[1].tolist() == [1] * 9 + [0] * 4
    assert batch["labels"][0].tolist() == [IGNORE_INDEX] * 10 + [9, 10, 11]
    assert batch["labels"][1].tolist() == [IGNORE_INDEX] * 8 + [12] + [IGNORE_INDEX] * 4


def test_bos_quirk_puts_a_constant_vector_at_position_zero_in_training_only():
    model = tiny_model(bos_quirk=True)
    before, after, labels = prompts()
    visual = torch.randn(2, 6, 32)
    embeds = model.build_inputs(visual, before, after, labels, bos_quirk=True)["inputs_embeds"]
    assert torch.all(embeds[:, 0] == 1.0)
    # Prompts for scoring and generation carry the real BOS embedding, as the original's inference does.
    prompt = model.build_inputs(visual, before, after, padding_side="left")["inputs_embeds"]
    assert torch.equal(prompt[0, 0], model.embed_tokens(torch.tensor(1)))


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches_give_the_logits_of_single_samples(side):
    model = tiny_model()
    visual = torch.randn(2, 6, 32)
    before, after, _ = prompts()
    batch = model.build_inputs(visual, before, after, padding_side=side)
    logits = model.llm(**batch).logits
    for i in range(2):
        single = model.build_inputs(visual[i : i + 1], before[i : i + 1], after[i : i + 1])
        alone = model.llm(**single).logits[0]
        rows = batch["attention_mask"][i].bool()
        torch.testing.assert_close(logits[i][rows], alone, atol=1e-5, rtol=1e-4)


def test_loss_counts_only_learned_tokens():
    model = tiny_model()
    before, after, labels = prompts()
    pixels = torch.randn(2, 2, 3, 32, 32)
    out = model(pixels, before, after, labels)
    logits, targets = out["logits"][:, :-1], out["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(out["loss"], expected)
    assert keep.sum() == 4


def test_instruction_changes_visual_tokens_only_when_read():
    pixels = torch.randn(1, 2, 3, 32, 32)
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    other = torch.tensor([[8, 9, 10]])
    reading = tiny_model(qformer_text_input=True)
    assert not torch.allclose(reading.encode_visual(pixels, ids, mask), reading.encode_visual(pixels, other, mask))
    blind = tiny_model(qformer_text_input=False)
    torch.testing.assert_close(blind.encode_visual(pixels, ids, mask), blind.encode_visual(pixels, other, mask))


@pytest.mark.parametrize("num_query", [2, 4, 9])
def test_num_query_reuses_the_checkpoint_queries_and_zero_fills_the_rest(num_query):
    saved = {"query_tokens": torch.randn(1, 4, 32), "extra_query_tokens": torch.randn(1, 2, 32)}
    model = tiny_model(num_query=num_query)
    queries = torch.cat([model.query_tokens, model.extra_query_tokens], dim=1)
    merged = merged_queries(queries, saved)
    reference = torch.cat([saved["query_tokens"], saved["extra_query_tokens"]], dim=1)
    n = min(num_query, 6)
    torch.testing.assert_close(merged[:, :n], reference[:, :n])
    assert torch.all(merged[:, 6:] == 0)


def test_initialise_accounts_for_every_key():
    source = tiny_model()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("llm.")}
    state["vision_proj.weight"] = torch.zeros(3, 3)  # a stage-1 head: ignored by rule
    target = tiny_model(num_query=8)
    with pytest.raises(CheckpointError, match="extra_query_tokens"):
        initialise(target, [("stage1", state)], allowed_missing=("llm.",))
    report = initialise(target, [("stage1", state)], allowed_missing=("llm.", FRESH_QUERIES))
    assert "vision_proj.weight" in report.ignored
    assert report.allowed_missing["extra_query_tokens"] == FRESH_QUERIES.name
    torch.testing.assert_close(target.llm_proj.weight, source.llm_proj.weight)
    with pytest.raises(CheckpointError, match="not in the model: nonsense.weight"):
        initialise(tiny_model(), [("bad", {"nonsense.weight": torch.zeros(1)})], allowed_missing=("llm.",))
    partial = {k: v for k, v in state.items() if not k.startswith("llm_proj")}
    with pytest.raises(CheckpointError, match="llm_proj.weight"):
        initialise(tiny_model(), [("partial", partial)], allowed_missing=("llm.",))


def test_the_load_report_says_how_many_queries_kept_their_initialisation():
    """Finding 12: the summary counted keys, so a half-filled query key read as '0 left to their own source'."""
    state = {k: v for k, v in tiny_model().state_dict().items() if not k.startswith("llm.")}
    report = initialise(tiny_model(num_query=8), [("stage2", state)], allowed_missing=("llm.", FRESH_QUERIES))
    assert (report.queries_loaded, report.queries_total) == (6, 8)
    assert "queries: 6 of 8 from the checkpoints, the other 2 keep their initialisation" in report.summary()
    full = initialise(tiny_model(), [("stage2", state)], allowed_missing=("llm.",))
    assert "queries:" not in full.summary()
