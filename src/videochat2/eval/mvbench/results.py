"""What an MVBench run leaves behind: predictions.jsonl, results.json, a table, a plot.

The headline ``avg`` is total correct / total questions (the reference's "Avg");
``macro_avg`` is the mean of task accuracies. They coincide only when every task
has the same number of questions, so both are reported along with ``n``.
Questions without a gold letter (withheld answers) are counted per task under
``unlabelled`` and kept out of every accuracy.

predictions.jsonl holds one scored record per question and is flushed per line,
so an interrupted run resumes from the questions already answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Record = Mapping[str, Any]


def aggregate(records: Iterable[Record], settings: Mapping[str, Any] | None = None) -> dict:
    """The results.json dict from scored records (see ``scoring.score_prediction``)."""
    per_task: dict[str, list[Record]] = {}
    unlabelled: dict[str, int] = {}
    for record in records:
        if "gold" in record and record["gold"] is None:
            unlabelled[record["task"]] = unlabelled.get(record["task"], 0) + 1
        else:
            per_task.setdefault(record["task"], []).append(record)
    tasks = {name: _task_summary(rows) for name, rows in per_task.items()}
    total = sum(t["n"] for t in tasks.values())
    return {
        "n": total,
        "avg": _pct(sum(t["correct"] for t in tasks.values()), total),
        "avg_strict": _pct(sum(t["correct_strict"] for t in tasks.values()), total),
        "macro_avg": _mean([t["acc"] for t in tasks.values()]),
        "macro_avg_strict": _mean([t["acc_strict"] for t in tasks.values()]),
        "tasks": tasks,
        "unlabelled": unlabelled,
        "settings": dict(settings or {}),
    }


def _task_summary(rows: list[Record]) -> dict[str, Any]:
    correct = sum(bool(r["correct_official"]) for r in rows)
    correct_strict = sum(bool(r["correct_strict"]) for r in rows)
    return {
        "n": len(rows),
        "correct": correct,
        "correct_strict": correct_strict,
        "acc": _pct(correct, len(rows)),
        "acc_strict": _pct(correct_strict, len(rows)),
        "chance": _mean([100.0 / r["num_candidates"] for r in rows]),
        "missing_media": sum(bool(r["missing_media"]) for r in rows),
        "unparsed": sum(bool(r["unparsed"]) for r in rows),
    }


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def write_results(results: Mapping[str, Any], path: str | Path) -> None:
    """Write results.json (indented, so a diff between runs is readable)."""
    Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def format_table(results: Mapping[str, Any]) -> str:
    """A fixed-width text table: one row per task, then the two averages."""
    header = f"{'task':<26} {'n':>5} {'official':>9} {'strict':>7} {'chance':>7} {'missing':>8} {'unparsed':>9}"
    lines = [header, "-" * len(header)]
    for name, t in results["tasks"].items():
        lines.append(
            f"{name:<26} {t['n']:>5} {t['acc']:>9.2f} {t['acc_strict']:>7.2f} "
            f"{t['chance']:>7.2f} {t['missing_media']:>8} {t['unparsed']:>9}"
        )
    lines.append("-" * len(header))
    lines.append(f"{'Avg (total-weighted)':<26} {results['n']:>5} {results['avg']:>9.2f} {results['avg_strict']:>7.2f}")
    lines.append(f"{'Avg (macro)':<26} {'':>5} {results['macro_avg']:>9.2f} {results['macro_avg_strict']:>7.2f}")
    for name, n in results.get("unlabelled", {}).items():
        lines.append(f"{name:<26} {n:>5} answered, answers withheld (not scored)")
    return "\n".join(lines)


def plot_results(results: Mapping[str, Any], path: str | Path, title: str) -> None:
    """Per-task bars (official and strict accuracy) with each task's chance level, under `title` (which
    benchmark, run and variant: a picture travels without its directory).

    Drawn on an Agg canvas directly, so plotting never changes the process-wide
    matplotlib backend of the caller.
    """
    names = list(results["tasks"])
    tasks = [results["tasks"][n] for n in names]
    xs = range(len(names))
    fig = Figure(figsize=(max(6.0, 0.6 * len(names) + 2), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar([x - 0.2 for x in xs], [t["acc"] for t in tasks], 0.4, label="official")
    ax.bar([x + 0.2 for x in xs], [t["acc_strict"] for t in tasks], 0.4, label="strict")
    for x, t in zip(xs, tasks):
        ax.hlines(t["chance"], x - 0.45, x + 0.45, colors="black", linestyles="dashed")
    ax.plot([], [], color="black", linestyle="dashed", label="chance")
    ax.set_xticks(list(xs), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{title}: avg {results['avg']:.1f} (strict {results['avg_strict']:.1f}), n={results['n']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


class PredictionLog:
    """Append-only predictions.jsonl writer, one flushed line per question.

    Opening repairs the last line left by a killed run (a partial record is dropped,
    a complete one gets its newline); otherwise the next record would be glued onto
    it and both would be lost.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None

    def __enter__(self) -> PredictionLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_tail(self.path)
        self._file = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, record: Record) -> None:
        """Append one record and flush it, so it survives the process being killed."""
        if self._file is None:
            raise RuntimeError("PredictionLog must be used as a context manager")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()


def _drop_partial_tail(path: Path) -> None:
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    try:
        json.loads(data[keep:].decode("utf-8"))
    except ValueError:  # also a line cut inside a multi-byte character (UnicodeDecodeError)
        path.write_bytes(data[:keep])
    else:
        path.write_bytes(data + b"\n")


def load_predictions(path: str | Path) -> dict[tuple[str, int], dict]:
    """Records already written, keyed by (task, index); the last one of a key wins.

    A truncated last line (interrupted run) is ignored; a malformed line anywhere
    else means the file is damaged and is an error.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    # Decoded line by line: a kill can cut the last line inside a multi-byte character.
    lines = path.read_bytes().split(b"\n")
    records: dict[tuple[str, int], dict] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError as err:
            if number == len(lines):
                break
            raise ValueError(f"{path} line {number} is not valid JSON: {err}") from err
        records[(record["task"], int(record["index"]))] = record
    return records


def answered_keys(path: str | Path) -> set[tuple[str, int]]:
    """(task, index) pairs that need no new prediction on resume."""
    return set(load_predictions(path))
