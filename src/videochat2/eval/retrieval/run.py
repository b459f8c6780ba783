"""Stage-1 text<->video retrieval of a caption corpus, by the UMT/VideoChat2 protocol (reference §7).

Videos and texts are encoded once; the contrastive similarity ranks every pair, then each query's top
`k_test` candidates are re-scored by the matching head over the video's tokens. Both result sets are
returned: `itc` (similarity only) and `itm` (re-ranked, the one the original selects checkpoints by).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from videochat2.data.formats import MediaRecord
from videochat2.data.transforms import FrameTransform
from videochat2.data.video import FrameSampling, read_media
from videochat2.eval.progress import Progress
from videochat2.eval.retrieval.metrics import PairScorer, rerank_top_k, retrieval_metrics
from videochat2.models.alignment import VideoChat2Alignment

CPU = torch.device("cpu")


@dataclass(frozen=True)
class RetrievalCorpus:
    """Unique media and their captions; `text_to_video[j]` is caption j's media index."""

    media: tuple[MediaRecord, ...]
    texts: tuple[str, ...]
    text_to_video: torch.Tensor


def build_corpus(records: Sequence[MediaRecord]) -> RetrievalCorpus:
    """Group caption records by media file, so a video with several captions is one candidate."""
    media: dict[Path, int] = {}
    unique, texts, owners = [], [], []
    for record in records:
        if record.path not in media:
            media[record.path] = len(unique)
            unique.append(record)
        texts.append(record.caption)
        owners.append(media[record.path])
    return RetrievalCorpus(tuple(unique), tuple(texts), torch.tensor(owners, dtype=torch.long))


class ClipDataset(Dataset):
    """Each media file as test-time frames: the `middle` rule and a square resize, as the original."""

    def __init__(self, media: Sequence[MediaRecord], num_frames: int, transform: FrameTransform) -> None:
        self.media = list(media)
        self.sampling = FrameSampling(num_frames, "middle")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.media)

    def __getitem__(self, index: int) -> torch.Tensor:
        record = self.media[index]
        bound = (record.start, record.end) if record.start is not None else None
        frames = read_media(record.path, record.media_type, self.sampling, bound=bound, backend=record.reader)
        return self.transform(frames)


@torch.no_grad()
def encode_videos(
    model: VideoChat2Alignment, loader: DataLoader, device: torch.device = CPU
) -> tuple[torch.Tensor, torch.Tensor]:
    """(vision tokens [V, N, C] for the matching head, normalised query features [V, Q, E]), on `device`."""
    tokens, features = [], []
    with Progress(len(loader.dataset), "videos") as progress:
        for pixel_values in loader:
            pixel_values = pixel_values.to(device, non_blocking=True)
            embeds, query_embeds = model.encode_vision(pixel_values)
            tokens.append(embeds)
            features.append(torch.nn.functional.normalize(model.vision_proj(query_embeds), dim=-1))
            progress.update(len(pixel_values))
    return torch.cat(tokens), torch.cat(features)


@torch.no_grad()
def encode_texts(
    model: VideoChat2Alignment,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = 256,
    device: torch.device = CPU,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids, attention mask, normalised [CLS] features), padded to `max_length` as the original."""
    tokens = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
    features = [
        model.text_features(ids[i : i + batch_size], mask[i : i + batch_size]) for i in range(0, len(texts), batch_size)
    ]
    return ids, mask, torch.cat(features)


def itm_pair_scorer(
    model: VideoChat2Alignment,
    vision_tokens: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    videos_are_queries: bool,
    chunk: int = 32,
) -> PairScorer:
    """The matching head's score of one query against candidate indices, in chunks of `chunk` pairs."""

    @torch.no_grad()
    def score(query: int, candidates: torch.Tensor) -> torch.Tensor:
        out = []
        for part in candidates.split(chunk):
            if videos_are_queries:
                vision, text_ids, text_mask = vision_tokens[query].expand(len(part), -1, -1), ids[part], mask[part]
            else:
                vision = vision_tokens[part]
                text_ids, text_mask = ids[query].expand(len(part), -1), mask[query].expand(len(part), -1)
            out.append(model.itm_scores(vision, text_ids, text_mask))
        return torch.cat(out)

    return score


def evaluate_retrieval(
    model: VideoChat2Alignment,
    tokenizer: PreTrainedTokenizerBase,
    corpus: RetrievalCorpus,
    loader: DataLoader,
    max_txt_len: int = 32,
    k_test: int = 128,
    device: torch.device = CPU,
) -> dict[str, dict[str, float]]:
    """`{"itc": recalls, "itm": recalls}` for the corpus (see `retrieval.retrieval_metrics`); the model on `device`."""
    model.eval()
    vision_tokens, vision_feats = encode_videos(model, loader, device)
    ids, mask, text_feats = encode_texts(model, tokenizer, corpus.texts, max_txt_len, device=device)
    sim_v2t = model.similarity(vision_feats, text_feats).float().cpu()
    v2t = rerank_top_k(sim_v2t, itm_pair_scorer(model, vision_tokens, ids, mask, True), k_test)
    t2v = rerank_top_k(sim_v2t.t(), itm_pair_scorer(model, vision_tokens, ids, mask, False), k_test)
    return {
        "itc": retrieval_metrics(sim_v2t, corpus.text_to_video),
        "itm": retrieval_metrics(v2t, corpus.text_to_video, sim_t2v=t2v),
    }


def format_retrieval(metrics: dict[str, dict[str, float]]) -> str:
    """The recalls as a table, one row per result set (`itc`, `itm`)."""
    keys = ["r1_t2v", "r5_t2v", "r10_t2v", "r1_v2t", "r5_v2t", "r10_v2t", "r_mean"]
    lines = [f"{'scores':<8}" + "".join(f"{k:>9}" for k in keys)]
    lines += [f"{name:<8}" + "".join(f"{values[k]:>9.2f}" for k in keys) for name, values in metrics.items()]
    return "\n".join(lines)
