"""Text<->video retrieval recall, the UMT/VideoChat2 stage-1 metric, and the matching-head re-ranking.

R@K is the percentage of queries whose ground truth ranks in the top K; a video with several
captions counts as found when any of them is (the original's minimum rank). Names follow design §4:
`r1_t2v` is text-to-video R@1, `r1_v2t` video-to-text.

The original reports two sets: the contrastive similarity alone, and the same ranking with each
query's top `k_test` candidates re-scored by the matching head (every other candidate set to -100).
Re-ranking is done per direction, so the two directions get different score matrices.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchmetrics.functional.retrieval import retrieval_hit_rate

KS = (1, 5, 10)
# Score of the candidates outside a query's top k after re-ranking, as the original.
OUTSIDE_TOP_K = -100.0

PairScorer = Callable[[int, torch.Tensor], torch.Tensor]


def _hit_rates(scores: torch.Tensor, relevant: torch.Tensor) -> dict[int, float]:
    """Mean hit rate @K over query rows of a [queries, candidates] score matrix."""
    rates = {}
    for k in KS:
        hits = [retrieval_hit_rate(s, r, top_k=k) for s, r in zip(scores.float(), relevant)]
        rates[k] = 100.0 * torch.stack(hits).mean().item()
    return rates


def retrieval_metrics(
    sim_v2t: torch.Tensor, text_to_video: torch.Tensor, sim_t2v: torch.Tensor | None = None
) -> dict[str, float]:
    """Recalls from a [videos, texts] score matrix and each text's video index.

    `sim_t2v` ([texts, videos]) ranks the text-to-video direction when it has its own scores (after
    re-ranking); by default it is the transpose of `sim_v2t`.
    """
    n_videos, n_texts = sim_v2t.shape
    if text_to_video.shape != (n_texts,):
        raise ValueError(f"text_to_video must have shape ({n_texts},), got {tuple(text_to_video.shape)}")
    sim_t2v = sim_v2t.t() if sim_t2v is None else sim_t2v
    if sim_t2v.shape != (n_texts, n_videos):
        raise ValueError(f"sim_t2v must have shape ({n_texts}, {n_videos}), got {tuple(sim_t2v.shape)}")
    relevant_t2v = torch.zeros(n_texts, n_videos, dtype=torch.bool)
    relevant_t2v[torch.arange(n_texts), text_to_video] = True
    t2v = _hit_rates(sim_t2v, relevant_t2v)
    v2t = _hit_rates(sim_v2t, relevant_t2v.t())
    metrics = {f"r{k}_t2v": t2v[k] for k in KS} | {f"r{k}_v2t": v2t[k] for k in KS}
    metrics["r_mean_t2v"] = sum(t2v.values()) / len(KS)
    metrics["r_mean_v2t"] = sum(v2t.values()) / len(KS)
    metrics["r_mean"] = (metrics["r_mean_t2v"] + metrics["r_mean_v2t"]) / 2
    return metrics


def rerank_top_k(scores: torch.Tensor, score_pairs: PairScorer, k: int) -> torch.Tensor:
    """Re-score each query row's top-`k` candidates with `score_pairs(query, candidates)`.

    `scores` is [queries, candidates]; the result keeps that shape, with the new scores on each row's
    top k and `OUTSIDE_TOP_K` elsewhere, so only the top k can be retrieved, in their new order.
    """
    k = min(k, scores.shape[1])
    reranked = torch.full(scores.shape, OUTSIDE_TOP_K, dtype=torch.float32)
    for query, row in enumerate(scores):
        top = row.topk(k).indices
        reranked[query, top] = score_pairs(query, top).float().cpu()
    return reranked
