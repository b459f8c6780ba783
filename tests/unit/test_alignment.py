"""Stage-1 model: API shapes, each loss against a hand computation, negatives, and the gathered VTC gradient."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from videochat2.models.alignment import (
    AlignmentConfig,
    VideoChat2Alignment,
    gathered_vtc_loss,
    sample_negatives,
    similarity,
    vtc_loss,
)
from videochat2.models.qformer import QFormerConfig
from videochat2.models.vision import VisionConfig


def build(**overrides) -> VideoChat2Alignment:
    torch.manual_seed(0)
    vision = VisionConfig(img_size=32, patch_size=16, embed_dim=32, depth=3, num_heads=4)
    qformer = QFormerConfig.tiny(
        vocab_size=60,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=48,
        encoder_width=32,
        num_query_tokens=3,
        max_position_embeddings=16,
    )
    return VideoChat2Alignment(AlignmentConfig(embed_dim=16, **overrides), vision, qformer)


@pytest.fixture
def batch():
    torch.manual_seed(1)
    ids = torch.randint(1, 58, (4, 6))
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0
    ids[2, 4:] = 0
    return torch.randn(4, 4, 3, 32, 32), ids, mask, torch.tensor([0, 1, 2, 2])


def test_api_shapes(batch):
    model = build().eval()
    video, ids, mask, _ = batch
    vision_embeds, query_embeds = model.encode_vision(video)
    assert vision_embeds.shape == (4, 16, 32) and query_embeds.shape == (4, 3, 32)
    image_embeds, image_queries = model.encode_vision(video[:2, :1])
    assert image_embeds.shape == (2, 16, 32) and image_queries.shape == (2, 3, 32)
    text_embeds, text_cls = model.encode_text(ids, mask)
    assert text_embeds.shape == (4, 6, 32) and text_cls.shape == (4, 32)
    v, t = model.vision_features(video), model.text_features(ids, mask)
    assert v.shape == (4, 3, 16) and t.shape == (4, 16)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(4, 3))
    assert model.similarity(v, t[:3]).shape == (4, 3)
    assert model.itm_scores(vision_embeds, ids, mask).shape == (4,)


def test_image_is_broadcast_over_the_temporal_embedding():
    model = build().eval()
    image = torch.randn(1, 1, 3, 32, 32)
    embeds, _ = model.encode_vision(image)
    frames = model.vision_encoder(image) + model.vision_temp_embed
    torch.testing.assert_close(embeds, model.vision_layernorm(frames.flatten(1, 2)))
    with pytest.raises(ValueError, match="4 frames"):
        model.encode_vision(torch.randn(1, 3, 3, 32, 32))


def test_forward_losses_and_gradients(batch):
    model = build().train()
    out = model(*batch)
    assert set(out) == {"loss", "loss_vtc", "loss_vtm", "loss_vtg"}
    torch.testing.assert_close(out["loss"], out["loss_vtc"] + out["loss_vtm"] + out["loss_vtg"])
    out["loss"].backward()
    assert all(p.grad is None for p in model.vision_encoder.parameters())
    for name in (
        "query_tokens",
        "temp",
        "vision_temp_embed",
        "vision_layernorm.weight",
        "itm_head.weight",
        "qformer.cls.predictions.transform.dense.weight",
    ):
        assert model.get_parameter(name).grad is not None, name


def test_loss_weights_and_skips(batch):
    model = build(vtm_weight=0.0, vtg_weight=2.0).eval()
    out = model(*batch)
    assert out["loss_vtm"].item() == 0.0
    torch.testing.assert_close(out["loss"], out["loss_vtc"] + 2 * out["loss_vtg"])


def test_temperature_is_clamped(batch):
    model = build().eval()
    with torch.no_grad():
        model.temp.fill_(5.0)
    model(*batch)
    assert model.temp.item() == pytest.approx(0.5)


def test_no_weight_decay_names_exist():
    model = build()
    names = dict(model.named_parameters())
    assert model.no_weight_decay() == {"query_tokens", "temp", "vision_temp_embed"}
    assert model.no_weight_decay() <= set(names)


def test_similarity_mean_and_max():
    torch.manual_seed(0)
    v, t = torch.randn(3, 4, 5), torch.randn(2, 5)
    for agg, reduce in (("mean", lambda x: sum(x) / len(x)), ("max", max)):
        sim = similarity(v, t, agg)
        for m in range(3):
            for n in range(2):
                expected = reduce([float(v[m, q] @ t[n]) for q in range(4)])
                assert sim[m, n].item() == pytest.approx(expected, abs=1e-5)


def test_vtc_loss_hand_computed():
    sim = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.5, 3.0]])
    idx = torch.tensor([0, 1, 1])
    targets = [[1, 0, 0], [0, 0.5, 0.5], [0, 0.5, 0.5]]

    def direction(matrix):
        total = 0.0
        for i in range(3):
            log_z = math.log(sum(math.exp(x) for x in matrix[i]))
            total += -sum(targets[i][j] * (matrix[i][j] - log_z) for j in range(3))
        return total / 3

    rows = sim.tolist()
    cols = sim.t().tolist()
    expected = (direction(rows) + direction(cols)) / 2
    assert vtc_loss(sim, idx, idx).item() == pytest.approx(expected, abs=1e-6)


def test_gathered_vtc_single_process_uses_temperature():
    torch.manual_seed(0)
    v = F.normalize(torch.randn(4, 3, 8), dim=-1)
    t = F.normalize(torch.randn(4, 8), dim=-1)
    idx = torch.arange(4)
    torch.testing.assert_close(gathered_vtc_loss(v, t, idx, 0.1), vtc_loss(similarity(v, t) / 0.1, idx, idx))


def test_vtm_loss_hand_computed(batch):
    model = build().eval()
    video, ids, mask, idx = batch
    vision_neg, text_neg = torch.tensor([1, 0, 0, 1]), torch.tensor([2, 3, 0, 0])
    out = model(video, ids, mask, idx, vision_neg_idx=vision_neg, text_neg_idx=text_neg)
    embeds, _ = model.encode_vision(video)
    pairs = []
    for i in range(4):
        pairs += [(i, i, 1), (vision_neg[i], i, 0), (i, text_neg[i], 0)]
    v_rows, t_rows, labels = (torch.tensor(column) for column in zip(*pairs))
    logits = model.itm_head(model.vtm_embed(embeds[v_rows], ids[t_rows], mask[t_rows]))
    expected = -F.log_softmax(logits, dim=-1)[torch.arange(12), labels].mean()
    torch.testing.assert_close(out["loss_vtm"], expected, atol=1e-5, rtol=1e-5)


def test_vtm_embed_without_text_cls_uses_mean_query():
    model = build(vtm_cat_text_cls=False).eval()
    assert model.itm_head.in_features == 32
    ids = torch.randint(1, 58, (2, 5))
    embeds = torch.randn(2, 16, 32)
    hidden = model.qformer.bert(ids, torch.ones_like(ids), model.query_tokens.expand(2, -1, -1), embeds)
    torch.testing.assert_close(model.vtm_embed(embeds, ids, torch.ones_like(ids)), hidden[:, :3].mean(1))


def test_vtg_loss_hand_computed(batch):
    model = build().eval()
    video, ids, mask, idx = batch
    out = model(*batch)
    embeds, _ = model.encode_vision(video)
    dec_ids = ids.clone()
    dec_ids[:, 0] = model.qformer.config.dec_token_id
    hidden = model.qformer.bert(dec_ids, mask, model.query_tokens.expand(4, -1, -1), embeds, causal=True)
    logits = model.qformer.cls(hidden[:, 3:])
    terms = []
    for b in range(4):
        for t in range(5):
            target = dec_ids[b, t + 1].item()
            if target == 0:
                continue
            logp = F.log_softmax(logits[b, t], dim=-1)
            terms.append(0.9 * -logp[target] + 0.1 * -logp.mean())
    torch.testing.assert_close(out["loss_vtg"], torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)


def test_negatives_exclude_positives():
    torch.manual_seed(0)
    idx = torch.tensor([0, 0, 1, 1, 2, 3])
    sim = torch.randn(6, 6) * 10
    for hard in (True, False):
        for _ in range(20):
            vision_neg, text_neg = sample_negatives(sim, idx, hard)
            assert (idx[vision_neg] != idx).all() and (idx[text_neg] != idx).all()


def test_hard_negatives_follow_the_similarity():
    idx = torch.arange(3)
    sim = torch.tensor([[0.0, 30.0, 20.0], [30.0, 0.0, -30.0], [-30.0, 10.0, 0.0]])
    vision_neg, text_neg = sample_negatives(sim, idx)
    assert text_neg.tolist() == [1, 0, 1]
    assert vision_neg.tolist() == [1, 0, 0]


def test_all_positive_batch_does_not_crash():
    vision_neg, text_neg = sample_negatives(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long))
    assert vision_neg.shape == text_neg.shape == (3,)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vtc_grad(vision_in, text_in, idx, proj_v, proj_t):
    """Gradient of VTC w.r.t. two projection matrices (stand-ins for trainable heads)."""
    proj_v = proj_v.clone().requires_grad_(True)
    proj_t = proj_t.clone().requires_grad_(True)
    v = F.normalize(vision_in @ proj_v, dim=-1)
    t = F.normalize(text_in @ proj_t, dim=-1)
    gathered_vtc_loss(v, t, idx, 0.07).backward()
    return proj_v.grad, proj_t.grad


def _rank_worker(rank: int, port: int, tensors: dict, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        rows = slice(0, 4) if rank == 0 else slice(4, 6)
        grads = _vtc_grad(tensors["v"][rows], tensors["t"][rows], tensors["idx"][rows], tensors["pv"], tensors["pt"])
        for grad in grads:
            dist.all_reduce(grad)
            grad /= 2
        torch.save(list(grads), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # starts fresh interpreters importing torch
def test_vtc_gradient_across_two_processes_matches_one_process(tmp_path):
    """Ranks hold 4 and 2 rows; after DDP-style averaging the gradient equals the whole-batch one."""
    torch.manual_seed(0)
    tensors = {
        "v": torch.randn(6, 3, 5),
        "t": torch.randn(6, 5),
        "idx": torch.tensor([0, 1, 2, 3, 1, 5]),
        "pv": torch.randn(5, 4),
        "pt": torch.randn(5, 4),
    }
    expected = _vtc_grad(tensors["v"], tensors["t"], tensors["idx"], tensors["pv"], tensors["pt"])
    mp.start_processes(_rank_worker, args=(_free_port(), tensors, str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in range(2):
        grads = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for got, want in zip(grads, expected):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4, msg=f"rank {rank}")


def test_tiny_presets_fit_together():
    torch.manual_seed(0)
    model = VideoChat2Alignment(AlignmentConfig(embed_dim=64), VisionConfig.tiny(), QFormerConfig.tiny(vocab_size=80))
    ids = torch.randint(1, 78, (2, 8))
    out = model(torch.randn(2, 4, 3, 64, 64), ids, torch.ones_like(ids), torch.arange(2))
    assert torch.isfinite(out["loss"])
    assert model.vision_features(torch.randn(1, 1, 3, 64, 64)).shape == (1, 32, 64)
