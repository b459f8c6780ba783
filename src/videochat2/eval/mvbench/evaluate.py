"""One MVBench evaluation of a loaded model, resumable: answer what predictions.jsonl lacks, then score it all.

The recipe decides which model, which questions, which frames and where the outputs go; everything after
that is here, so a notebook runs the same evaluation as `python eval.py`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from videochat2 import distributed
from videochat2.builder import LoadedModel
from videochat2.device import on_device
from videochat2.eval.mvbench.answerers import build_answerer
from videochat2.eval.mvbench.data import FrameCache, FrameSpec, MVBenchCollator, MVBenchDataset
from videochat2.eval.mvbench.results import aggregate, format_table, plot_results, write_results
from videochat2.eval.mvbench.run import (
    answer_questions,
    merge_shards,
    missing_media,
    my_shard,
    pending_questions,
    question_loader,
    run_records,
    shard_files,
    shard_path,
)
from videochat2.eval.mvbench.tasks import MVBenchQuestion
from videochat2.plots import plot_variants

log = logging.getLogger(__name__)

# The oracle baseline writes the gold answer this many times in the media slot (visual tokens say it many times).
ORACLE_REPEATS = 4


@dataclass
class AnswerOptions:
    """How questions are answered; `blind` hides the frames, `oracle` writes the answer in their place."""

    answerer: str = "letter_logits"
    max_new_tokens: int = 100
    # generate: the whole batch decodes together (True) or one question at a time, as the notebook (False).
    generate_batched: bool = True
    blind: bool = False
    oracle: bool = False
    batch_size: int = 8
    num_workers: int = 0
    cache_dir: str | None = None
    # Stop at the first unreadable clip instead of scoring its question wrong (benchmark.strict_media).
    strict_media: bool = False

    def __post_init__(self) -> None:
        if self.blind and self.oracle:
            raise ValueError("eval.blind and eval.oracle are opposite baselines; set one of them")


def check_media(questions: list[MVBenchQuestion], strict: bool) -> None:
    """strict: stop with every missing path; otherwise warn (they are scored wrong and counted)."""
    missing = missing_media(questions)
    if missing and strict:
        listing = "\n  ".join(missing)
        raise FileNotFoundError(f"{len(missing)} media paths are missing (benchmark.strict_media=true):\n  {listing}")
    if missing:
        log.warning("%d media paths are missing; their questions are scored wrong and counted per task", len(missing))


def start_or_resume(out_dir: Path, settings: dict) -> None:
    """Keep predictions.jsonl (and its shards) only if made with the same settings; otherwise set them aside."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings_path, predictions = out_dir / "settings.json", out_dir / "predictions.jsonl"
    previous = json.loads(settings_path.read_text()) if settings_path.is_file() else None
    if previous != settings:
        for path in [predictions, *shard_files(predictions)]:
            if path.is_file():
                stale = path.with_suffix(".jsonl.stale")
                path.replace(stale)
                log.warning("settings or checkpoints changed since %s was written; moved it to %s", path, stale)
    settings_path.write_text(json.dumps(settings, indent=2) + "\n")


def answer_pending(
    loaded: LoadedModel,
    frames: FrameSpec,
    family: str,
    todo: list[MVBenchQuestion],
    predictions: Path,
    options: AnswerOptions,
) -> int:
    """Answer `todo` in batches, appending to predictions.jsonl as they come; returns how many were written."""
    model = loaded.model
    qformer_tokenizer = loaded.qformer_tokenizer if model.config.qformer_text_input else None
    collate = MVBenchCollator(
        loaded.llm_tokenizer, qformer_tokenizer, family, answer_in_slot=ORACLE_REPEATS if options.oracle else 0
    )
    dataset = MVBenchDataset(todo, frames, FrameCache(options.cache_dir), blind=options.blind or options.oracle)
    pin = loaded.placement is not None and loaded.placement.pin_memory
    loader = question_loader(dataset, collate, options.batch_size, options.num_workers, pin)
    answerer = build_answerer(
        options.answerer, model, loaded.llm_tokenizer, family, options.max_new_tokens, options.generate_batched
    )
    with loaded.autocast():
        return answer_questions(
            on_device(loader, loaded.device),
            answerer,
            options.answerer,
            predictions,
            options.strict_media,
            total=len(todo),
        )


def evaluate_mvbench(
    loaded: LoadedModel,
    questions: list[MVBenchQuestion],
    frames: FrameSpec,
    family: str,
    options: AnswerOptions,
    out_dir: Path,
    settings: dict,
) -> dict:
    """Answer the questions not yet in out_dir/predictions.jsonl, then score, tabulate and plot them all.

    `settings` is what makes earlier predictions reusable: when it differs from the one they were made
    with, they are set aside and every question is answered again.

    Under a process group (torchrun) each rank answers its own part of what is pending into its own shard;
    rank 0 merges and scores, and every rank returns the same results.
    """
    rank, world = distributed.rank(), distributed.world_size()
    predictions = out_dir / "predictions.jsonl"
    if rank == 0:
        start_or_resume(out_dir, settings)
    distributed.barrier()
    todo = pending_questions(questions, predictions)
    log.info("%d questions, %d already answered in %s", len(questions), len(questions) - len(todo), predictions)
    mine = my_shard(todo, rank, world)
    if mine:
        target = predictions if world == 1 else shard_path(predictions, rank)
        log.info("answered %d questions", answer_pending(loaded, frames, family, mine, target, options))
    distributed.barrier()
    if rank == 0:
        merge_shards(questions, predictions)
        results = aggregate(run_records(questions, predictions), settings)
        write_results(results, out_dir / "results.json")
        title = f"{out_dir.name} of {out_dir.parent.parent.name}"
        plot_results(results, out_dir / "results.png", title)
        run_name = out_dir.parent.parent.name
        plot_variants(out_dir.parent, settings["benchmark"], f"{settings['benchmark']} of {run_name}")
        print(format_table(results))
        log.info("results in %s", out_dir)
    distributed.barrier()
    return results if rank == 0 else json.loads((out_dir / "results.json").read_text())
