"""One MVBench evaluation of a loaded model, resumable: answer what predictions.jsonl lacks, then score it all.

The recipe decides which model, which questions, which frames and where the outputs go; everything after
that is here, so a notebook runs the same evaluation as `python eval.py`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from videochat2.builder import LoadedModel
from videochat2.eval.mvbench.answerers import build_answerer
from videochat2.eval.mvbench.data import FrameCache, FrameSpec, MVBenchCollator, MVBenchDataset
from videochat2.eval.mvbench.results import aggregate, format_table, plot_results, write_results
from videochat2.eval.mvbench.run import answer_questions, missing_media, pending_questions, question_loader, run_records
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
    """Keep predictions.jsonl only if it was made with the same settings; otherwise set it aside."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings_path, predictions = out_dir / "settings.json", out_dir / "predictions.jsonl"
    previous = json.loads(settings_path.read_text()) if settings_path.is_file() else None
    if predictions.is_file() and previous != settings:
        stale = predictions.with_suffix(".jsonl.stale")
        predictions.replace(stale)
        log.warning("settings or checkpoints changed since %s was written; moved it to %s", predictions, stale)
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
    loader = question_loader(dataset, collate, options.batch_size, options.num_workers)
    answerer = build_answerer(options.answerer, model, loaded.llm_tokenizer, family, options.max_new_tokens)
    return answer_questions(loader, answerer, options.answerer, predictions, options.strict_media)


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
    """
    start_or_resume(out_dir, settings)
    predictions = out_dir / "predictions.jsonl"
    todo = pending_questions(questions, predictions)
    log.info("%d questions, %d already answered in %s", len(questions), len(questions) - len(todo), predictions)
    if todo:
        log.info("answered %d questions", answer_pending(loaded, frames, family, todo, predictions, options))
    results = aggregate(run_records(questions, predictions), settings)
    write_results(results, out_dir / "results.json")
    title = f"{out_dir.name} of {out_dir.parent.parent.name}"
    plot_results(results, out_dir / "results.png", title)
    plot_variants(out_dir.parent, settings["benchmark"], f"{settings['benchmark']} of {out_dir.parent.parent.name}")
    print(format_table(results))
    log.info("results in %s", out_dir)
    return results
