"""Pieces every DataModule shares: building the embedded data, corpora, the training loader."""

from __future__ import annotations

import logging
from collections.abc import Callable

from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from videochat2.data.formats import MediaRecord
from videochat2.data.mixing import MediaTypeBatchSampler

log = logging.getLogger(__name__)


def prepare_synthetic(config: DictConfig) -> None:
    """Build the embedded synthetic set on first use (a no-op once its manifest matches)."""
    if config.get("synthetic"):
        from videochat2.data.synthetic import build

        build(config.root, **config.synthetic)


def build_corpus(entries, load: Callable[..., list[MediaRecord]]) -> list[MediaRecord]:
    """Concatenate the records of every corpus entry and log one line per corpus."""
    records: list[MediaRecord] = []
    loaded = [(entry, load(entry.annotation, entry.media_root, entry.media_type)) for entry in entries]
    total = sum(len(r) for _, r in loaded) or 1
    for entry, corpus in loaded:
        log.info(
            "corpus %-24s %7d records  %-5s  %5.1f%% of the mix",
            entry.name, len(corpus), entry.media_type, 100 * len(corpus) / total,
        )
        records.extend(corpus)
    return records


def train_loader(dataset: Dataset, collate, config: DictConfig, seed: int, trainer) -> DataLoader:
    """Homogeneous media-type batches, sharded by rank, in an order all ranks share."""
    sampler = MediaTypeBatchSampler(
        dataset.media_types,
        config.batch_size,
        seed=seed,
        rank=trainer.global_rank if trainer else 0,
        world_size=trainer.world_size if trainer else 1,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=config.num_workers,
        collate_fn=collate,
        persistent_workers=config.num_workers > 0,
    )


def prepare_embedded_llm(config: DictConfig, llm: DictConfig) -> None:
    """Pretrain the embedded tiny Llama on the synthetic text on first use (a no-op when it is there)."""
    settings = config.get("embedded_llm")
    if not settings or llm.preset != "tiny_llama" or llm.path is None:
        return
    from hydra.utils import instantiate

    from videochat2.models.embedded_llm import corpus_texts, pretrain_tiny_llama

    llm_config = instantiate(llm, path=None, lora=False, gradient_checkpointing=False)
    texts = corpus_texts([f"{config.root}/annotations/{name}.json" for name in settings.corpus])
    pretrain_tiny_llama(texts, settings.tokenizer, llm.path, llm_config, steps=settings.steps, seed=settings.seed)
