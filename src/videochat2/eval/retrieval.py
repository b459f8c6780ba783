"""Text<->video retrieval recall, the UMT/VideoChat2 stage-1 metric.

R@K is the percentage of queries whose ground truth ranks in the top K; a video with several
captions counts as found when any of them is (the original's minimum rank). Names follow design §4:
`r1_t2v` is text-to-video R@1, `r1_v2t` video-to-text.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.retrieval import retrieval_hit_rate

KS = (1, 5, 10)


def _hit_rates(scores: torch.Tensor, relevant: torch.Tensor) -> dict[int, float]:
    """Mean hit rate @K over query rows of a [queries, candidates] score matrix."""
    rates = {}
    for k in KS:
        hits = [retrieval_hit_rate(s, r, top_k=k) for s, r in zip(scores.float(), relevant)]
        rates[k] = 100.0 * torch.stack(hits).mean().item()
    return rates


def retrieval_metrics(sim_v2t: torch.Tensor, text_to_video: torch.Tensor) -> dict[str, float]:
    """Recalls from a [videos, texts] similarity matrix and each text's video index."""
    n_videos, n_texts = sim_v2t.shape
    if text_to_video.shape != (n_texts,):
        raise ValueError(f"text_to_video must have shape ({n_texts},), got {tuple(text_to_video.shape)}")
    relevant_t2v = torch.zeros(n_texts, n_videos, dtype=torch.bool)
    relevant_t2v[torch.arange(n_texts), text_to_video] = True
    t2v = _hit_rates(sim_v2t.t(), relevant_t2v)
    v2t = _hit_rates(sim_v2t, relevant_t2v.t())
    metrics = {f"r{k}_t2v": t2v[k] for k in KS} | {f"r{k}_v2t": v2t[k] for k in KS}
    metrics["r_mean_t2v"] = sum(t2v.values()) / len(KS)
    metrics["r_mean_v2t"] = sum(v2t.values()) / len(KS)
    metrics["r_mean"] = (metrics["r_mean_t2v"] + metrics["r_mean_v2t"]) / 2
    return metrics
