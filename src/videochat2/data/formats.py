"""Annotation files -> one normalised record type.

Supported formats (the `format` of a corpus entry):

- `videochat2_caption`: VideoChat2 pretraining, a list of `{"video"|"image": relpath, "caption": str}`.
- `videochat2_instruction`: VideoChat2 instruction data, a list of
  `{"video"|"image": relpath, "QA": [{"i", "q", "a"}], "start"?, "end"?}`.
- `llava`: LLaVA-style conversations, `{"video"|"image": relpath, "conversations": [{"from": "human"|"gpt",
  "value": "<video>\\n..."}]}`; an optional leading `system` turn becomes the instruction.
- `mvbench`: MVBench items `{"video", "question", "candidates", "answer", "start"?, "end"?}`, kept as a
  structured multiple-choice question (`MediaRecord.choice`) and trained on in the benchmark's own prompt
  (`conversation.build_choice_conversation`).

Any of them may be a JSON list or JSONL (one record per line, chosen by the `.jsonl` suffix). Media paths
are relative to the corpus' media root. A malformed record is an error that names the file and the record
index, so a bad annotation never turns into silently missing training data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from videochat2.data.qa_generation import LETTERS

MEDIA_TYPES = ("video", "image")
# Reader names users type in a corpus entry -> the video backend they select.
READERS = {"decord": "decord", "pyav": "av"}


@dataclass(frozen=True)
class MultipleChoice:
    """A benchmark-style question; kept structured so its options can be re-ordered for every draw."""

    question: str
    candidates: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class MediaRecord:
    """One training sample: a media file plus its text (a caption, QA turns or a multiple-choice question)."""

    path: str
    media_type: str
    caption: str | None = None
    qa: tuple[dict, ...] = field(default_factory=tuple)
    choice: MultipleChoice | None = None
    start: float | None = None
    end: float | None = None
    reader: str = "decord"
    corpus: str = ""


class AnnotationError(ValueError):
    """A record that cannot be read; the message names the file and the record index."""


def _read_list(path: Path) -> list:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    if path.suffix == ".jsonl":
        return [_json(line, path, f"line {n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    data = _json(text, path, "file")
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _json(text: str, path: Path, where: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: {where} is not valid JSON ({err})") from None


def _media_path(item: object, path: Path, index: int, media_type: str, media_root: Path) -> str:
    if not isinstance(item, dict):
        raise AnnotationError(f"{path}: record {index} is {type(item).__name__}, expected an object")
    rel = item.get(media_type)
    if not isinstance(rel, str) or not rel:
        raise AnnotationError(f"{path}: record {index} has no {media_type!r} path")
    return str(media_root / rel)


def _caption_record(item: dict, path: Path, index: int, media: str, media_type: str) -> MediaRecord:
    caption = item.get("caption")
    if not isinstance(caption, str):
        raise AnnotationError(f"{path}: record {index} has no string 'caption'")
    return MediaRecord(media, media_type, caption=caption)


def _qa_turns(item: dict, path: Path, index: int) -> tuple[dict, ...]:
    qa = item.get("QA")
    if not isinstance(qa, list) or not qa:
        raise AnnotationError(f"{path}: record {index} has no non-empty 'QA' list")
    turns = []
    for turn_index, turn in enumerate(qa):
        if not isinstance(turn, dict) or not isinstance(turn.get("a"), str):
            raise AnnotationError(f"{path}: record {index}, QA turn {turn_index} has no string 'a'")
        turns.append({"i": str(turn.get("i") or ""), "q": str(turn.get("q") or ""), "a": turn["a"]})
    return tuple(turns)


def _bound(item: dict, path: Path, index: int) -> tuple[float | None, float | None]:
    start, end = item.get("start"), item.get("end")
    if start is None and end is None:
        return None, None
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, end))
    if not numbers or end <= start:
        raise AnnotationError(f"{path}: record {index} has invalid clip bounds start={start!r} end={end!r}")
    return float(start), float(end)


def _instruction_record(item: dict, path: Path, index: int, media: str, media_type: str) -> MediaRecord:
    start, end = _bound(item, path, index)
    return MediaRecord(media, media_type, qa=_qa_turns(item, path, index), start=start, end=end)


# LLaVA's media placeholders; our prompt templates place the media themselves.
PLACEHOLDER = re.compile(r"\s*<(?:video|image)>\s*", re.IGNORECASE)


def _llava_record(item: dict, path: Path, index: int, media: str, media_type: str) -> MediaRecord:
    """Human/gpt turns paired into QA turns, the media placeholder removed from the human text."""
    turns = item.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise AnnotationError(f"{path}: record {index} has no non-empty 'conversations' list")
    for n, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise AnnotationError(f"{path}: record {index}, conversation turn {n} has no string 'value'")
    instruction, first = "", 0
    if turns[0].get("from") == "system":
        instruction, first = turns[0]["value"].strip(), 1
    roles = [t.get("from") for t in turns[first:]]
    expected = ["human", "gpt"] * (len(roles) // 2 + 1)
    bad = next((n for n, role in enumerate(roles) if role != expected[n]), None)
    if bad is not None or len(roles) % 2 or not roles:
        where = f"turn {first + bad} is from {roles[bad]!r}" if bad is not None else f"{len(roles)} turns"
        raise AnnotationError(
            f"{path}: record {index}: conversations must alternate human/gpt turns, starting with human "
            f"and ending with gpt ({where})"
        )
    qa = tuple(
        {"i": "", "q": PLACEHOLDER.sub(" ", turns[n]["value"]).strip(), "a": turns[n + 1]["value"]}
        for n in range(first, len(turns), 2)
    )
    qa[0]["i"] = instruction
    return MediaRecord(media, media_type, qa=qa)


def _mvbench_record(item: dict, path: Path, index: int, media: str, media_type: str) -> MediaRecord:
    question, candidates, answer = item.get("question"), item.get("candidates"), item.get("answer")
    if not isinstance(question, str):
        raise AnnotationError(f"{path}: record {index} has no string 'question'")
    if (
        not isinstance(candidates, list)
        or not 2 <= len(candidates) <= len(LETTERS)
        or not all(isinstance(c, str) for c in candidates)
    ):
        raise AnnotationError(f"{path}: record {index}: 'candidates' must be a list of 2-{len(LETTERS)} strings")
    if answer not in candidates:
        raise AnnotationError(f"{path}: record {index}: 'answer' {answer!r} is not one of the candidates")
    start, end = _bound(item, path, index)
    choice = MultipleChoice(question, tuple(candidates), answer)
    return MediaRecord(media, media_type, choice=choice, start=start, end=end)


Parser = Callable[[dict, Path, int, str, str], MediaRecord]
FORMATS: dict[str, Parser] = {
    "videochat2_caption": _caption_record,
    "videochat2_instruction": _instruction_record,
    "llava": _llava_record,
    "mvbench": _mvbench_record,
}
# The format a corpus entry has when it names none, by the task it serves.
DEFAULT_FORMAT = {
    "caption": "videochat2_caption",
    "instruction": "videochat2_instruction",
    "retrieval": "videochat2_caption",
}


def load_records(
    path: str | Path,
    media_root: str | Path,
    media_type: str,
    format: str = "videochat2_caption",
    reader: str = "decord",
    corpus: str = "",
) -> list[MediaRecord]:
    """Every record of one annotation file in one of FORMATS, tagged with its video reader and corpus."""
    if media_type not in MEDIA_TYPES:
        raise AnnotationError(f"{path}: media_type must be one of {MEDIA_TYPES}, got {media_type!r}")
    if format not in FORMATS:
        raise AnnotationError(f"{path}: format must be one of {sorted(FORMATS)}, got {format!r}")
    if reader not in READERS:
        raise AnnotationError(f"{path}: reader must be one of {sorted(READERS)}, got {reader!r}")
    path, media_root, parse = Path(path), Path(media_root), FORMATS[format]
    records = []
    for index, item in enumerate(_read_list(path)):
        record = parse(item, path, index, _media_path(item, path, index, media_type, media_root), media_type)
        records.append(replace(record, reader=READERS[reader], corpus=corpus))
    return records


def load_caption_records(path: str | Path, media_root: str | Path, media_type: str) -> list[MediaRecord]:
    """Read a VideoChat2 pretraining file (`{"video"|"image", "caption"}` records)."""
    return load_records(path, media_root, media_type, "videochat2_caption")


def load_instruction_records(path: str | Path, media_root: str | Path, media_type: str) -> list[MediaRecord]:
    """Read a VideoChat2 instruction file (`{"video"|"image", "QA": [{"i", "q", "a"}], "start"?, "end"?}`)."""
    return load_records(path, media_root, media_type, "videochat2_instruction")
