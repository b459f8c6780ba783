"""MVBench-style automatic multiple choice: turn labelled media into benchmark questions.

MVBench builds its questions the same way for every task: a question drawn from a few templates, the true
label as the answer, and distractors from either a fixed answer vocabulary (directions, counts) or the
other labels of the same annotation set. This module does that for any annotation list, so users can add
their own tasks and the synthetic world builds its benchmark and its multiple-choice instruction items
with the very code users run.

An item is ``{"video", "question", "candidates", "answer"[, "start", "end"]}`` (the MVBench main-branch
fields); ``answer`` is always one of ``candidates``. Gold positions are balanced over a task (the letter
used least so far wins), duplicates are removed, and distractors of a length close to the answer's are
preferred, without making the answer the option of middle length, so option length gives nothing away.

Command line (records are ``{"video": ..., "label": ...}``, optionally ``"start"``/``"end"`` in seconds)::

    python -m videochat2.data.qa_generation --input ann.json --output task.json \\
        [--template "What is the person doing?"]... [--vocabulary a,b,c] [--options 4] [--allow-fewer]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LETTERS = "ABCDE"
MIN_OPTIONS, MAX_OPTIONS = 2, len(LETTERS)

# (record, rng) -> (answer, pool of distractors); the pool may hold duplicates or the answer itself.
CandidateBuilder = Callable[[Mapping, random.Random], tuple[str, list[str]]]


class QAGenerationError(ValueError):
    """Input that cannot become a well-formed multiple-choice item."""


@dataclass(frozen=True)
class Task:
    """What makes one MVBench-style task: question templates and where the options come from."""

    name: str
    templates: Sequence[str]
    candidates: CandidateBuilder
    num_options: int = 4


def fixed_vocabulary(words: Sequence[str], field: str = "label") -> CandidateBuilder:
    """Distractors from a closed answer set, e.g. the four directions."""
    vocabulary = list(dict.fromkeys(words))

    def build(record: Mapping, rng: random.Random) -> tuple[str, list[str]]:
        answer = record[field]
        if answer not in vocabulary:
            raise ValueError(f"label {answer!r} is not in the vocabulary {vocabulary}")
        return answer, vocabulary

    return build


def label_set(labels: Sequence[str], field: str = "label") -> CandidateBuilder:
    """Distractors from the labels the annotation file itself uses (MVBench's usual source)."""
    return fixed_vocabulary(sorted(set(labels)), field)


def per_record(field: str = "label", distractor_field: str = "distractors") -> CandidateBuilder:
    """Distractors stored in each record, for tasks whose wrong answers depend on the clip."""

    def build(record: Mapping, rng: random.Random) -> tuple[str, list[str]]:
        pool = record[distractor_field]
        if not isinstance(pool, list) or not all(isinstance(d, str) for d in pool):
            raise ValueError(f"{distractor_field!r} must be a list of strings")
        return record[field], pool

    return build


class PositionBalancer:
    """Hands out gold positions so that every letter is used about equally within a task."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.counts = [0] * MAX_OPTIONS

    def take(self, num_options: int) -> int:
        least = min(self.counts[:num_options])
        position = self.rng.choice([i for i in range(num_options) if self.counts[i] == least])
        self.counts[position] += 1
        return position


def pick_distractors(answer: str, pool: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """Distinct distractors whose lengths fall in a window that contains the answer's length.

    The window sits at a random offset around the answer, so the answer is not systematically the
    option of middle length (which a text-only model would learn to pick).
    """
    distinct = [d for d in dict.fromkeys(pool) if d != answer]
    width = max(4.0, 0.6 * len(answer))
    low = len(answer) - rng.random() * width
    rng.shuffle(distinct)
    distinct.sort(key=lambda d: max(low - len(d), 0.0, len(d) - low - width))
    return distinct[:count]


def format_question(question: str, candidates: Sequence[str]) -> str:
    """The benchmark's question block: the question, then one ``(A) option`` line per candidate."""
    lines = [f"Question: {question}", "Options:"]
    lines += [f"({LETTERS[i]}) {c}" for i, c in enumerate(candidates)]
    return "\n".join(lines)


def format_answer(candidates: Sequence[str], answer: str) -> str:
    """The answer in the form the benchmark prompt expects after ``Best option:(``."""
    return f"({LETTERS[candidates.index(answer)]}) {answer}"


def make_item(
    record: Mapping, task: Task, rng: random.Random, balancer: PositionBalancer, allow_fewer: bool = False
) -> dict:
    """One MVBench item from one record; raises KeyError/ValueError on bad records."""
    answer, pool = task.candidates(record, rng)
    if not isinstance(answer, str) or not answer:
        raise ValueError(f"label must be a non-empty string, got {answer!r}")
    distractors = pick_distractors(answer, pool, task.num_options - 1, rng)
    if len(distractors) + 1 < task.num_options and not (allow_fewer and len(distractors) + 1 >= MIN_OPTIONS):
        raise ValueError(
            f"only {len(distractors) + 1} distinct candidates for {task.num_options} options"
            + ("" if allow_fewer else " (allow fewer options to accept this)")
        )
    candidates = list(distractors)
    candidates.insert(balancer.take(len(candidates) + 1), answer)
    template = rng.choice(list(task.templates))
    try:
        question = template.format(**record)
    except KeyError as err:
        raise ValueError(f"template {template!r} needs the field {err.args[0]!r}") from err
    item = {"video": record["video"], "question": question, "candidates": candidates, "answer": answer}
    item.update(_bounds(record))
    return item


def _bounds(record: Mapping) -> dict:
    if "start" not in record and "end" not in record:
        return {}
    start, end = record.get("start"), record.get("end")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, end)):
        raise ValueError(f"'start' and 'end' must both be numbers, got {start!r} and {end!r}")
    if not 0 <= start < end:
        raise ValueError(f"need 0 <= start < end, got start={start} end={end}")
    return {"start": float(start), "end": float(end)}


def build_items(
    records: Sequence[Mapping], task: Task, *, seed: int = 0, allow_fewer: bool = False, source: str = "<records>"
) -> tuple[list[dict], dict[int, int]]:
    """All items of a task plus how many items got each option count (to report shortened items)."""
    if not MIN_OPTIONS <= task.num_options <= MAX_OPTIONS:
        raise QAGenerationError(f"{task.name}: num_options must be in {MIN_OPTIONS}..{MAX_OPTIONS}")
    if not task.templates:
        raise QAGenerationError(f"{task.name}: at least one question template is needed")
    rng = random.Random(seed)
    balancer = PositionBalancer(rng)
    items, option_counts = [], {}
    for index, record in enumerate(records):
        try:
            _check_record(record)
            item = make_item(record, task, rng, balancer, allow_fewer)
        except KeyError as err:
            raise QAGenerationError(f"{source}: item {index}: missing field {err.args[0]!r}") from err
        except (ValueError, TypeError) as err:
            message = err.args[0] if err.args else repr(err)
            raise QAGenerationError(f"{source}: item {index}: {message}") from err
        items.append(item)
        option_counts[len(item["candidates"])] = option_counts.get(len(item["candidates"]), 0) + 1
    return items, option_counts


def _check_record(record: object) -> None:
    if not isinstance(record, Mapping):
        raise ValueError(f"expected an object, got {type(record).__name__}")
    if not isinstance(record.get("video"), str) or not record["video"]:
        raise ValueError("missing or empty 'video'")


def load_records(path: Path) -> list[dict]:
    """A JSON list of records; any other shape is reported with the file name."""
    try:
        records = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise QAGenerationError(f"{path}: cannot read JSON: {err}") from err
    if not isinstance(records, list):
        raise QAGenerationError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    return records


DEFAULT_TEMPLATES = (
    "What is happening in the video?",
    "Which option best describes the video?",
    "What does the video show?",
)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m videochat2.data.qa_generation", description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, required=True, help="JSON list of {video, label[, start, end]}")
    parser.add_argument("--output", type=Path, required=True, help="task JSON to write (MVBench items)")
    parser.add_argument("--name", default=None, help="task name (default: the output file's stem)")
    parser.add_argument("--template", action="append", help="question template; repeat for several")
    parser.add_argument("--field", default="label", help="record field holding the answer")
    parser.add_argument("--vocabulary", default=None, help="comma-separated fixed answer set")
    parser.add_argument("--options", type=int, default=4, help="options per question (2-5)")
    parser.add_argument("--allow-fewer", action="store_true", help="use fewer options when too few labels")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Convert an annotation file to an MVBench task JSON; errors are one line on stderr."""
    args = _parse_args(argv)
    try:
        records = load_records(args.input)
        labels = [r.get(args.field) for r in records if isinstance(r, Mapping)]
        vocabulary = args.vocabulary.split(",") if args.vocabulary else None
        builder = (
            fixed_vocabulary(vocabulary, args.field)
            if vocabulary
            else label_set([str(x) for x in labels if isinstance(x, str)], args.field)
        )
        task = Task(args.name or args.output.stem, tuple(args.template or DEFAULT_TEMPLATES), builder, args.options)
        items, counts = build_items(records, task, seed=args.seed, allow_fewer=args.allow_fewer, source=str(args.input))
    except QAGenerationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(items, indent=1))
    summary = ", ".join(f"{n} with {k} options" for k, n in sorted(counts.items()))
    print(f"wrote {len(items)} items to {args.output} ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
