"""Video-MME (lmms-lab/Video-MME on the Hugging Face Hub) -> a tasks.json root, with or without subtitles.

Reads the release's `videomme/test-00000-of-00001.parquet` (2,700 questions; needs `pyarrow`) or the same rows
exported as JSON / JSON Lines (`--annotations`): `videoID`, `duration` (short | medium | long), `question_id`,
`task_type`, `domain`, `sub_category`, `question`, `options` (["A. ...", "B. ...", "C. ...", "D. ..."]) and
`answer` (a letter). Videos are `data/<videoID>.mp4` (.MP4 and .mkv also found); subtitles are
`subtitle/<videoID>.srt`. One task per duration, as Video-MME reports its scores.

With subtitles, each question carries the whole subtitle text as its prompt context (Video-MME's wording,
"This video's subtitles are listed below:"), optionally cut to its first `subtitle_words` words for short LLM
contexts; a video without a subtitle file says "No subtitles available", as the benchmark's protocol does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from videochat2.eval.converters.common import Conversion, Task, first_file, mc_item, option_problem, require_file
from videochat2.eval.mvbench.tasks import read_json

ANNOTATIONS = ("videomme/test-00000-of-00001.parquet", "test-00000-of-00001.parquet")
DURATIONS = {"short": ("Short videos", "S"), "medium": ("Medium videos", "M"), "long": ("Long videos", "L")}
FIELDS = ("videoID", "duration", "question_id", "question", "options", "answer")
SUBTITLE_HEADER = "This video's subtitles are listed below:"
NO_SUBTITLES = "No subtitles available"
VIDEO_SUFFIXES = (".mp4", ".MP4", ".mkv")
_LETTERED = re.compile(r"^\s*([A-Z])\.\s*(.*)$", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def convert(
    src: Path, annotations: Path | None = None, subtitles: bool = False, subtitle_words: int | None = None
) -> Conversion:
    """Video-MME questions grouped by duration; with `subtitles`, each one with its video's subtitle text."""
    rows = read_rows(annotations or first_file(src, ANNOTATIONS, "the Video-MME annotation parquet"))
    tasks = {key: Task(name, abbr, "videomme/", src / "data") for key, (name, abbr) in DURATIONS.items()}
    conversion = Conversion(list(tasks.values()))
    contexts: dict[str, str] = {}
    for row in rows:
        task = tasks.get(str(row["duration"]))
        if task is None:
            conversion.skipped[f"duration not short/medium/long: {row['duration']!r}"] += 1
            continue
        options, answer, problem = parse_options(row["options"], str(row["answer"]))
        if problem:
            conversion.skipped[problem] += 1
            continue
        video_id = str(row["videoID"])
        extra = {key: row[key] for key in ("question_id", "task_type", "domain", "sub_category") if key in row}
        if subtitles:
            if video_id not in contexts:
                contexts[video_id] = subtitle_context(src / "subtitle" / f"{video_id}.srt", subtitle_words)
                conversion.notes["videos without a subtitle file"] += contexts[video_id].endswith(NO_SUBTITLES)
            extra["context"] = contexts[video_id]
        item = mc_item(video_file(src / "data", video_id), str(row["question"]), options, answer, **extra)
        task.items.append(item)
    return conversion


def read_rows(path: Path) -> list[dict]:
    """The annotation rows of a .parquet, .json (a list) or .jsonl file, each checked for the fields used."""
    require_file(path, "Video-MME annotations")
    if path.suffix == ".parquet":
        rows = _read_parquet(path)
    elif path.suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [_json_line(path, n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    else:
        rows = read_json(path)
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of question rows")
    for number, row in enumerate(rows):
        missing = [key for key in FIELDS if not isinstance(row, dict) or key not in row]
        if missing:
            raise ValueError(f"{path}: row {number} lacks {missing}")
    return rows


def _read_parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise ImportError(
            f"{path}: reading parquet needs pyarrow (pip install pyarrow), or pass the rows as JSON with --annotations"
        ) from None
    return parquet.read_table(path).to_pylist()


def _json_line(path: Path, number: int, line: str) -> dict:
    try:
        return json.loads(line)
    except ValueError as err:
        raise ValueError(f"{path} line {number}: not valid JSON ({err})") from None


def parse_options(raw: object, letter: str) -> tuple[list[str], int | None, str | None]:
    """("A. text", ...) -> (texts, gold position, why the row is unusable or None)."""
    if not isinstance(raw, (list, tuple)) or not all(isinstance(o, str) for o in raw):
        return [], None, "options are not a list of strings"
    options = []
    for position, option in enumerate(raw):
        match = _LETTERED.match(option)
        if match and match.group(1) != chr(ord("A") + position):
            return [], None, "options out of letter order"
        options.append(match.group(2).strip() if match else option.strip())
    answer = ord(letter) - ord("A") if len(letter) == 1 and letter.isupper() else -1
    problem = option_problem(options, answer)
    return options, answer, problem


def video_file(folder: Path, video_id: str) -> str:
    """`<videoID>.mp4`, or the .MP4 / .mkv file of that name where only that one exists."""
    for suffix in VIDEO_SUFFIXES:
        if (folder / f"{video_id}{suffix}").exists():
            return f"{video_id}{suffix}"
    return f"{video_id}{VIDEO_SUFFIXES[0]}"


def subtitle_context(path: Path, max_words: int | None = None) -> str:
    """The prompt context for one video: the header, then its subtitle lines (or the no-subtitle line)."""
    lines = srt_lines(path) if path.is_file() else []
    if max_words:
        lines = first_words(lines, max_words)
    return f"{SUBTITLE_HEADER}\n" + ("\n".join(lines) or NO_SUBTITLES)


def first_words(lines: list[str], max_words: int) -> list[str]:
    """The lines holding the first `max_words` words (the last one cut)."""
    kept, count = [], 0
    for line in lines:
        words = line.split()
        if count + len(words) >= max_words:
            kept.append(" ".join(words[: max_words - count]))
            break
        kept.append(line)
        count += len(words)
    return [line for line in kept if line]


def srt_lines(path: Path) -> list[str]:
    """The spoken lines of a SubRip file in order: numbers, times and markup (<font ...>) dropped, repeats merged."""
    raw = path.read_text(encoding="utf-8-sig", errors="replace").replace("\r\n", "\n")
    lines: list[str] = []
    for block in re.split(r"\n\s*\n", raw):
        rows = block.strip().split("\n")
        timed = next((i for i, row in enumerate(rows) if "-->" in row), None)
        if timed is None:
            continue
        text = " ".join(_TAG.sub("", row).strip() for row in rows[timed + 1 :]).strip()
        if text and (not lines or lines[-1] != text):
            lines.append(text)
    return lines
