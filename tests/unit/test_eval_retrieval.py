"""Retrieval recalls with matching-head re-ranking, on a case small enough to check by hand."""

from __future__ import annotations

import pytest
import torch

from videochat2.eval.retrieval.metrics import OUTSIDE_TOP_K, rerank_top_k, retrieval_metrics

# Videos x texts; text j belongs to video j. Contrastive ranks: video 0 finds text 0 first, videos 1 and 2
# find their text second; text 0 finds video 0 first, texts 1 and 2 find their video second.
SIM = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.5, 0.6], [0.3, 0.4, 0.35]])
TRUTH = torch.tensor([0, 1, 2])


def matching_head(query: int, candidates: torch.Tensor) -> torch.Tensor:
    """A perfect matching head: 10 for the true pair, 0 otherwise."""
    return (candidates == query).float() * 10


def test_similarity_only_recalls():
    metrics = retrieval_metrics(SIM, TRUTH)
    assert metrics["r1_v2t"] == pytest.approx(100 / 3) and metrics["r1_t2v"] == pytest.approx(100 / 3)
    assert metrics["r5_v2t"] == metrics["r5_t2v"] == 100.0
    assert metrics["r_mean"] == pytest.approx((100 / 3 + 200) / 3)


def test_reranking_the_top_two_finds_every_pair():
    v2t = rerank_top_k(SIM, matching_head, k=2)
    t2v = rerank_top_k(SIM.t(), matching_head, k=2)
    assert v2t.tolist() == [[10, 0, OUTSIDE_TOP_K], [OUTSIDE_TOP_K, 10, 0], [OUTSIDE_TOP_K, 0, 10]]
    metrics = retrieval_metrics(v2t, TRUTH, sim_t2v=t2v)
    assert metrics["r1_v2t"] == metrics["r1_t2v"] == 100.0


def test_reranking_cannot_recover_pairs_outside_the_top_k():
    v2t = rerank_top_k(SIM, matching_head, k=1)
    assert v2t.tolist() == [
        [10, OUTSIDE_TOP_K, OUTSIDE_TOP_K],
        [OUTSIDE_TOP_K, OUTSIDE_TOP_K, 0],
        [OUTSIDE_TOP_K, 0, OUTSIDE_TOP_K],
    ]
    metrics = retrieval_metrics(v2t, TRUTH, sim_t2v=rerank_top_k(SIM.t(), matching_head, k=1))
    assert metrics["r1_v2t"] == pytest.approx(100 / 3) and metrics["r1_t2v"] == pytest.approx(100 / 3)


def test_the_two_directions_use_their_own_scores():
    t2v = torch.eye(3).flip(0)
    metrics = retrieval_metrics(torch.eye(3), TRUTH, sim_t2v=t2v)
    assert metrics["r1_v2t"] == 100.0 and metrics["r1_t2v"] == pytest.approx(100 / 3)
    with pytest.raises(ValueError, match="sim_t2v"):
        retrieval_metrics(torch.eye(3), TRUTH, sim_t2v=torch.eye(2))
