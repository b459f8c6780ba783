"""Annotation files -> one normalised record type.

VideoChat2 pretraining JSON is a list of `{"video"|"image": relpath, "caption": str}`; instruction
JSON is a list of `{"video"|"image": relpath, "QA": [{"i", "q", "a"}], "start"?, "end"?}`. Paths
are relative to the corpus' media root. A malformed record is an error that names the file and the
record index, so a bad annotation never turns into silently missing training data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

MEDIA_TYPES = ("video", "image")


@dataclass(frozen=True)
class MediaRecord:
    """One training sample: a media file plus its text (a caption or a list of QA turns)."""

    path: str
    media_type: str
    caption: str | None = None
    qa: tuple[dict, ...] = field(default_factory=tuple)
    start: float | None = None
    end: float | None = None


class AnnotationError(ValueError):
    """A record that cannot be read; the message names the file and the record index."""


def _read_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _media_path(item: object, path: Path, index: int, media_type: str, media_root: Path) -> str:
    if not isinstance(item, dict):
        raise AnnotationError(f"{path}: record {index} is {type(item).__name__}, expected an object")
    rel = item.get(media_type)
    if not isinstance(rel, str) or not rel:
        raise AnnotationError(f"{path}: record {index} has no {media_type!r} path")
    return str(media_root / rel)


def _load(path: str | Path, media_root: str | Path, media_type: str, parse) -> list[MediaRecord]:
    """Records of one annotation file; `parse(item, path, index, media)` builds each record."""
    if media_type not in MEDIA_TYPES:
        raise AnnotationError(f"{path}: media_type must be one of {MEDIA_TYPES}, got {media_type!r}")
    path, media_root = Path(path), Path(media_root)
    return [
        parse(item, path, index, _media_path(item, path, index, media_type, media_root), media_type)
        for index, item in enumerate(_read_list(path))
    ]


def _caption_record(item: dict, path: Path, index: int, media: str, media_type: str) -> MediaRecord:
    caption = item.get("caption")
    if not isinstance(caption, str):
        raise AnnotationError(f"{path}: record {index} has no string 'caption'")
    return MediaRecord(media, media_type, caption=caption)


def load_caption_records(path: str | Path, media_root: str | Path, media_type: str) -> list[MediaRecord]:
    """Read a VideoChat2 pretraining file (`{"video"|"image", "caption"}` records)."""
    return _load(path, media_root, media_type, _caption_record)


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
    if not isinstance(start, (int, float)) or not isinstance(end, (int, float)) or end <= start:
        raise AnnotationError(f"{path}: record {index} has invalid clip bounds start={start!r} end={end!r}")
    return float(start), float(end)


def _instruction_record(item: dict, path: Path, index: int, media: str, media_type: str) -> MediaRecord:
    start, end = _bound(item, path, index)
    return MediaRecord(media, media_type, qa=_qa_turns(item, path, index), start=start, end=end)


def load_instruction_records(path: str | Path, media_root: str | Path, media_type: str) -> list[MediaRecord]:
    """Read a VideoChat2 instruction file (`{"video"|"image", "QA": [{"i", "q", "a"}], "start"?, "end"?}`)."""
    return _load(path, media_root, media_type, _instruction_record)
