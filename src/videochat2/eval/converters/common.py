"""What every benchmark converter shares: question items, the tasks.json root they become, the report.

A converter reads a benchmark's released files into `Task`s; `write_root` writes them as a tasks.json root
(see `videochat2.eval.mvbench.tasks`) whose media folders are symbolic links to the release's own folders,
so no video is copied. A record that cannot become a fair question (no answer, an unknown video, options
that repeat so the gold letter would be ambiguous) is skipped and counted by reason; a missing or
ill-formed file stops the conversion with one line naming it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from videochat2.eval.mvbench.tasks import load_questions, read_json


@dataclass
class Task:
    """One task of the converted root: its questions and the release folder its media live in."""

    name: str
    abbr: str
    prefix: str
    media_dir: Path
    items: list[dict] = field(default_factory=list)
    labelled: bool = True


@dataclass
class Conversion:
    """A converter's result: tasks in display order, skipped records and notes, each counted by reason."""

    tasks: list[Task]
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class Report:
    """What `write_root` wrote, for the command's summary."""

    out: Path
    questions: dict[str, int]
    skipped: dict[str, int]
    notes: dict[str, int]
    missing_media: int

    def lines(self) -> list[str]:
        total = sum(self.questions.values())
        lines = [f"{total} questions in {len(self.questions)} tasks -> {self.out / 'tasks.json'}"]
        lines += [f"  {name}: {n}" for name, n in self.questions.items()]
        skipped = sum(self.skipped.values())
        lines.append(f"skipped {skipped} records" + (":" if skipped else ""))
        lines += [f"  {reason}: {n}" for reason, n in self.skipped.items()]
        lines += [f"note: {reason}: {n}" for reason, n in self.notes.items()]
        if self.missing_media:
            lines.append(f"warning: {self.missing_media} questions name a video that does not exist (scored wrong)")
        return lines


def mc_item(video: str, question: str, options: Sequence[str], answer: int | None, **extra: object) -> dict:
    """One question in the tasks.json item format; `answer` is the gold option's position (None: withheld)."""
    item = {"video": video, "question": question, "candidates": list(options)}
    if answer is not None:
        item["answer"] = options[answer]
    return item | extra


def option_problem(options: Sequence[str], answer: int | None) -> str | None:
    """Why these options cannot make a fair question (None: they can)."""
    if len(options) < 2:
        return "fewer than two options"
    if len(set(options)) != len(options):
        return "options repeat (the gold letter would be ambiguous)"
    if answer is not None and not 0 <= answer < len(options):
        return "answer index out of range"
    return None


def require_file(path: Path, what: str) -> Path:
    """`path`, or one line saying which file of the release is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    return path


def first_file(src: Path, names: Sequence[str], what: str) -> Path:
    """The first of `names` (relative to `src`) that exists."""
    for name in names:
        if (src / name).is_file():
            return src / name
    raise FileNotFoundError(f"{src}: {what} not found (looked for {', '.join(names)})")


def load_json(path: Path, what: str, kind: type) -> object:
    """A JSON file of the release that must hold a `kind` (dict or list)."""
    data = read_json(require_file(path, what))
    if not isinstance(data, kind):
        raise ValueError(f"{path}: expected a JSON {kind.__name__}, got {type(data).__name__}")
    return data


def write_root(out: Path, conversion: Conversion) -> Report:
    """Write json/<task>.json, tasks.json and the media links under `out`, then load it back as the evaluation
    will; tasks without questions are left out."""
    tasks = [t for t in conversion.tasks if t.items]
    if not tasks:
        raise ValueError(f"no question survived the conversion (skipped: {dict(conversion.skipped)})")
    (out / "json").mkdir(parents=True, exist_ok=True)
    spec = {}
    for task in tasks:
        json_name = f"{_slug(task.name)}.json"
        text = json.dumps(task.items, indent=1, ensure_ascii=False)
        (out / "json" / json_name).write_text(text + "\n", encoding="utf-8")
        _link(out / "video" / task.prefix.strip("/"), task.media_dir)
        spec[task.name] = {"json": json_name, "prefix": task.prefix, "media_type": "video", "abbr": task.abbr}
        if not task.labelled:
            spec[task.name]["labelled"] = False
    (out / "tasks.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    load_questions(out)  # the root must load as eval.py will load it
    missing = sum(not (out / "video" / t.prefix / item["video"]).exists() for t in tasks for item in t.items)
    return Report(
        out,
        {t.name: len(t.items) for t in tasks},
        dict(conversion.skipped),
        dict(conversion.notes),
        missing,
    )


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _link(path: Path, target: Path) -> None:
    """`path` -> `target` (absolute), replacing an older link but never a real file or folder."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        raise FileExistsError(f"{path} exists and is not a link; convert into a new OUT_ROOT")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target.resolve(), target_is_directory=True)
