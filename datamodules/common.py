"""Pieces every DataModule shares: the embedded data, the corpus registry, the resumable training loader."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from videochat2.data.formats import DEFAULT_FORMAT, MediaRecord, load_records
from videochat2.data.mixing import MediaTypeBatchSampler
from videochat2.embedded.llm import PretrainingSchedule
from videochat2.embedded.prepare import LLMPretraining, prepare
from videochat2.models.llm import LLMConfig

log = logging.getLogger(__name__)


@dataclass
class Mix:
    """The records of every corpus of a task, which corpus each came from, and the corpus weights."""

    records: list[MediaRecord]
    corpus_ids: list[int]
    weights: list[float] | None
    names: list[str] = field(default_factory=list)


def load_entry(entry: DictConfig, task: str) -> list[MediaRecord]:
    """One corpus entry `{name, annotation, media_root, media_type, format?, reader?, weight?}`."""
    return load_records(
        entry.annotation,
        entry.media_root,
        entry.media_type,
        format=entry.get("format") or DEFAULT_FORMAT[task],
        reader=entry.get("reader") or "decord",
        corpus=entry.get("name", ""),
    )


def build_corpus(entries, task: str) -> Mix:
    """Load every corpus entry of a task and log one line per corpus (records, type, weight, share)."""
    if not entries:
        raise ValueError(f"data.corpora.{task} has no entries: add at least one corpus")
    weights = [entry.get("weight") for entry in entries]
    if any(w is None for w in weights) and any(w is not None for w in weights):
        raise ValueError(f"data.corpora.{task}: give every corpus a weight, or none (mixing by size)")
    loaded = [load_entry(entry, task) for entry in entries]
    sizes = [len(records) for records in loaded]
    if not any(sizes):
        files = ", ".join(str(entry.annotation) for entry in entries)
        raise ValueError(f"data.corpora.{task}: every corpus is empty (no records in {files}): nothing to train on")
    shares = [float(w) for w in weights] if weights[0] is not None else [float(n) for n in sizes]
    total = sum(shares) or 1.0
    for entry, size, share in zip(entries, sizes, shares):
        weight = entry.get("weight")
        log.info(
            "corpus %-24s %9d records  %-5s  weight %-8s %5.1f%% of the mix",
            entry.name,
            size,
            entry.media_type,
            "size" if weight is None else f"{weight:g}",
            100 * share / total,
        )
    return Mix(
        records=[r for records in loaded for r in records],
        corpus_ids=[c for c, size in enumerate(sizes) for _ in range(size)],
        weights=None if weights[0] is None else shares,
        names=[str(entry.get("name", "")) for entry in entries],
    )


def check_drawn(sampler: MediaTypeBatchSampler, mix: Mix, batch_size: int) -> None:
    """An error when no full batch can be drawn; a warning, with its real share, per corpus never drawn."""
    if len(sampler) == 0:
        raise ValueError(
            f"data.batch_size={batch_size}: no media type has a full batch per rank ({len(mix.records)} records "
            "in all); lower data.batch_size or add data"
        )
    intended = [q / (sum(sampler.quotas) or 1) for q in sampler.quotas]
    for corpus, (share, drawn) in enumerate(zip(intended, sampler.drawn_shares())):
        if share > 0 and drawn == 0:
            name = mix.names[corpus] if corpus < len(mix.names) else str(corpus)
            log.warning(
                "corpus %s is never drawn: its %s samples per rank and epoch are fewer than one batch of %d "
                "(real share 0%% of the mix, not %.1f%%); lower data.batch_size or add %s data",
                name,
                sampler.corpus_type[corpus],
                batch_size,
                100 * share,
                sampler.corpus_type[corpus],
            )


# Lightning warns that a mid-epoch resume is unreliable unless the DataLoader itself has a state_dict;
# here the DataModule carries the sampler's state instead (see ResumableDataModule).
_NOT_RESUMABLE_WARNING = "You're resuming from a checkpoint that ended before the epoch ended"


class ResumableDataModule(LightningDataModule):
    """A DataModule whose training order continues exactly where a checkpoint left it.

    The checkpoint holds the sampler's state (`state_dict` below, saved by Lightning with the
    DataModule), with the number of batches the training loop has processed in the epoch as its
    position. The loader's own count would not do: Lightning fetches a batch ahead and workers
    prefetch more, and Lightning reloads a loader's own state only when the loader was not built
    early (it is, when a scheduler asks for `trainer.estimated_stepping_batches`).
    """

    sampler: MediaTypeBatchSampler | None = None
    _resume_state: dict | None = None

    def training_loader(self, dataset: Dataset, mix: Mix, collate, config: DictConfig, seed: int) -> DataLoader:
        """Homogeneous media-type batches, sharded by rank, in an order all ranks share."""
        trainer = self.trainer
        streaming = getattr(config, "streaming", None)
        if streaming and streaming.get("shards"):
            # Streaming hook: training samples come from tar shards instead (videochat2.data.shards).
            from videochat2.data.shards import stream_loader

            return stream_loader(
                streaming.shards,
                streaming.get("epoch_samples"),
                dataset,
                collate,
                config.batch_size,
                config.num_workers,
                seed,
                trainer.global_rank if trainer else 0,
                trainer.world_size if trainer else 1,
            )
        self.sampler = MediaTypeBatchSampler(
            [r.media_type for r in mix.records],
            config.batch_size,
            seed=seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            corpus_ids=mix.corpus_ids,
            weights=mix.weights,
        )
        check_drawn(self.sampler, mix, config.batch_size)
        if self._resume_state is not None:
            self.sampler.load_state_dict(self._resume_state)
            warnings.filterwarnings("ignore", message=_NOT_RESUMABLE_WARNING)
            self._resume_state = None
        return DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=config.num_workers,
            collate_fn=collate,
            persistent_workers=config.num_workers > 0,
        )

    def state_dict(self) -> dict:
        if self.sampler is None or self.trainer is None:
            return {}
        state = self.sampler.state_dict()
        state["position"] = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"train_sampler": state}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume_state = state_dict.get("train_sampler")


def prepare_embedded(config: DictConfig, llm: LLMConfig | None = None) -> None:
    """Build the embedded world on first use and, given the stage's `llm`, pretrain its tiny Llama on the text.

    Every process of a multi-process run calls this before the Trainer exists; the work is done once
    (`videochat2.embedded.prepare` holds a file lock) and is a no-op once it is on disk.
    """
    world = dict(config.synthetic) if config.get("synthetic") else None
    prepare(config.root, world, embedded_llm(config, llm) if llm is not None else None)


def embedded_llm(config: DictConfig, llm: LLMConfig) -> LLMPretraining | None:
    """The embedded tiny Llama's pretraining, when the data preset asks for it and the stage uses that LLM."""
    settings = config.get("embedded_llm")
    if not settings or llm.preset != "tiny_llama" or llm.path is None:
        return None
    return LLMPretraining(
        config=replace(llm, path=None, lora=False, gradient_checkpointing=False),
        out_dir=Path(llm.path),
        tokenizer=Path(settings.tokenizer),
        corpus=tuple(settings.corpus),
        schedule=PretrainingSchedule(steps=settings.steps, batch_size=settings.batch_size, seed=settings.seed),
    )
