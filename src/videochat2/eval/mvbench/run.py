"""Answer MVBench questions into predictions.jsonl, resumably, and read the run back in question order.

Every question ends up with exactly one record: answered by the model, or scored wrong with
`missing_media` when its clip could not be read (the official denominator stays whole). Records are
written one flushed line at a time, so an interrupted run loses at most the batch in flight and a
re-run answers only what is left.

Several processes (one per GPU) each append to their own shard, `predictions.rank<R>.jsonl` beside
predictions.jsonl; what is answered is the union of the file and every shard, whatever number of
processes wrote them, so a run resumes after a crash and with another number of processes. Rank 0 folds
the shards into predictions.jsonl (`merge_shards`) before scoring.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from videochat2.data.video import MediaReadError
from videochat2.eval.mvbench.answerers import Answer
from videochat2.eval.mvbench.results import PredictionLog, load_predictions
from videochat2.eval.mvbench.scoring import score_prediction
from videochat2.eval.mvbench.tasks import MVBenchQuestion
from videochat2.eval.progress import Progress

Answerer = Callable[[dict], list[Answer]]


def question_key(question: MVBenchQuestion) -> tuple[str, int]:
    return question.task, question.index


def shard_path(predictions: str | Path, rank: int) -> Path:
    """The file rank `rank` of a multi-process run appends to, beside predictions.jsonl."""
    predictions = Path(predictions)
    return predictions.with_name(f"{predictions.stem}.rank{rank}{predictions.suffix}")


def shard_files(predictions: str | Path) -> list[Path]:
    """The shards left beside predictions.jsonl by multi-process runs (of any number of processes)."""
    predictions = Path(predictions)
    return sorted(predictions.parent.glob(f"{predictions.stem}.rank*{predictions.suffix}"))


def recorded_predictions(predictions: str | Path) -> dict[tuple[str, int], dict]:
    """Every record of predictions.jsonl and its shards, by (task, index); a shard's record wins."""
    records = load_predictions(predictions)
    for shard in shard_files(predictions):
        records |= load_predictions(shard)
    return records


def pending_questions(questions: Sequence[MVBenchQuestion], predictions: str | Path) -> list[MVBenchQuestion]:
    """The questions neither predictions.jsonl nor any of its shards answers yet."""
    done = set(recorded_predictions(predictions))
    return [q for q in questions if question_key(q) not in done]


def my_shard(todo: Sequence[MVBenchQuestion], rank: int, world_size: int) -> list[MVBenchQuestion]:
    """Rank `rank`'s disjoint part of the pending questions: every `world_size`-th, so each rank sees every task."""
    return list(todo[rank::world_size])


def merge_shards(questions: Sequence[MVBenchQuestion], predictions: str | Path) -> None:
    """Fold the shards into predictions.jsonl (these questions first, in order; other records kept after).

    The merged file replaces the old one in one step and only then are the shards removed, so a crash at any
    point leaves every record in the file or in a shard.
    """
    predictions = Path(predictions)
    shards = shard_files(predictions)
    if not shards:
        return
    records = recorded_predictions(predictions)
    keys = [question_key(q) for q in questions if question_key(q) in records]
    first = set(keys)
    keys += [key for key in records if key not in first]
    tmp = predictions.with_name(predictions.name + ".merging")
    tmp.write_text("".join(json.dumps(records[key], ensure_ascii=False) + "\n" for key in keys), encoding="utf-8")
    os.replace(tmp, predictions)
    for shard in shards:
        shard.unlink()


def missing_media(questions: Iterable[MVBenchQuestion]) -> list[str]:
    """Media paths that do not exist (a frame folder must hold at least one file)."""
    missing = set()
    for question in questions:
        path = question.video
        if not path.exists() or (path.is_dir() and not any(path.iterdir())):
            missing.add(str(path))
    return sorted(missing)


def question_loader(
    dataset: Dataset, collate: Callable, batch_size: int, num_workers: int, pin_memory: bool = False
) -> DataLoader:
    """Batches in question order; workers decode clips in parallel (into pinned memory for a GPU)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        persistent_workers=False,
        pin_memory=pin_memory,
    )


def answer_batch(batch: dict, answerer: Answerer, answerer_name: str) -> list[dict]:
    """Scored records of one batch; questions without media skip the model and are scored wrong."""
    readable = [i for i, error in enumerate(batch["errors"]) if error is None]
    answers = dict(zip(readable, answerer(select(batch, readable)) if readable else []))
    records = []
    for i, (question, error) in enumerate(zip(batch["questions"], batch["errors"])):
        answer = answers.get(i)
        record = score_prediction(question, answer.prediction if answer else None, missing_media=error is not None)
        record |= {"answerer": answerer_name, "media_error": error} | (answer.extra if answer else {})
        records.append(record)
    return records


def select(batch: dict, rows: list[int]) -> dict:
    """The sub-batch of `rows` (all rows: the batch itself)."""
    if len(rows) == len(batch["questions"]):
        return batch
    picked = {}
    for key, value in batch.items():
        if value is None:
            picked[key] = None
        elif hasattr(value, "index_select"):
            picked[key] = value[rows]
        else:
            picked[key] = [value[i] for i in rows]
    return picked


def answer_questions(
    loader: Iterable[dict],
    answerer: Answerer,
    answerer_name: str,
    predictions: str | Path,
    strict: bool = False,
    total: int | None = None,
) -> int:
    """Append one record per question of `loader` to predictions.jsonl; returns how many were written.

    `strict`: an unreadable clip stops the run (with the questions before it kept, so a rerun resumes).
    `total` (the questions `loader` holds) turns on the progress bar and its periodic log line.
    """
    written = 0
    progress = Progress(total) if total is not None else None
    try:
        with PredictionLog(predictions) as log:
            for batch in loader:
                if strict:
                    stop_on_unreadable(batch)
                for record in answer_batch(batch, answerer, answerer_name):
                    log.write(record)
                    written += 1
                if progress is not None:
                    progress.update(len(batch["questions"]))
    finally:
        if progress is not None:
            progress.close()
    return written


def stop_on_unreadable(batch: dict) -> None:
    """One line naming the first clip of `batch` that exists but could not be read."""
    for question, error in zip(batch["questions"], batch["errors"]):
        if error is not None:
            raise MediaReadError(
                f"{question.video}: unreadable ({error.splitlines()[0]}); benchmark.strict_media=true stops here: "
                "fix or remove the file, or set benchmark.strict_media=false to score its question wrong"
            )


def run_records(questions: Sequence[MVBenchQuestion], predictions: str | Path) -> list[dict]:
    """The records of `questions`, in question order (other questions in the file are ignored)."""
    recorded = load_predictions(predictions)
    missing = [question_key(q) for q in questions if question_key(q) not in recorded]
    if missing:
        raise RuntimeError(f"{len(missing)} questions have no prediction in {predictions}, e.g. {missing[:3]}")
    return [recorded[question_key(q)] for q in questions]
