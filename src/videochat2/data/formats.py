"""Annotation files -> one normalised record type.

Supported formats (the `format` of a corpus entry):

- `videochat2_caption`: VideoChat2 pretraining, a list of `{"video"|"image": relpath, "caption": str}`.
- `videochat2_instruction`: VideoChat2 instruction data, a list of
  `{"video"|"image": relpath, "QA": [{"i", "q", "a"}], "start"?, "end"?}`.
- `llava`: LLaVA-style conversations, `{"video"|"image": relpath, "conversations": [{"from": "human"|"gpt",
  "value": "<video>\\n..."}]}`; an optional leading `system` turn becomes the instruction.
- `sharegpt`: LLaMA-Factory's ShareGPT layout, `{"conversations": [{"from": "human"|"gpt", "value":
  "<video>..."}], "videos"|"images": [relpath], "system"?}`; `openai`: the same with OpenAI-style
  `{"messages": [{"role": "system"|"user"|"assistant", "content": str}]}`. A system message (or the `system`
  key) becomes the instruction. A record must hold exactly one media file of the corpus' type and one
  matching placeholder; other records (several videos, none, a placeholder count that differs, tool turns)
  are skipped, counted by reason and logged, since such files mix record kinds this model cannot train on.
- `mvbench`: MVBench items `{"video", "question", "candidates", "answer", "start"?, "end"?}`, kept as a
  structured multiple-choice question (`MediaRecord.choice`) and trained on in the benchmark's own prompt
  (`conversation.build_choice_conversation`).

Any of them may be a JSON list, JSONL (one record per line, chosen by the `.jsonl` suffix), or Parquet: a
`.parquet` file or a folder of Parquet shards, read row by row with Hugging Face `datasets` (the optional
`[datasets]` extra), local files only. Media paths
are relative to the corpus' media root. A malformed record is an error that names the file and the record
index, so a bad annotation never turns into silently missing training data.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from videochat2.data.qa_generation import LETTERS

log = logging.getLogger(__name__)

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


class SkipRecord(Exception):
    """A well-formed record this model cannot train on; its message is the reason it is counted under."""


@dataclass
class Annotations:
    """The records of one annotation file, and the indices of the records skipped, by reason."""

    records: list[MediaRecord]
    skipped: dict[str, list[int]] = field(default_factory=dict)

    def skip_report(self, path: str | Path) -> str:
        """One line: how many records were skipped, why, and the first of each kind to look at."""
        reasons = "; ".join(f"{len(ix)} {why} (first: record {ix[0]})" for why, ix in self.skipped.items())
        return f"{path}: skipped {sum(map(len, self.skipped.values()))} records: {reasons}"


# `owner/name`: what a Hugging Face Hub dataset id looks like, as opposed to a local file.
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def _read_list(path: Path) -> list:
    if path.suffix == ".parquet" or path.is_dir():
        return _read_parquet(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        if HUB_ID.fullmatch(str(path)) and not path.suffix.startswith(".json"):
            raise AnnotationError(
                f"{path}: not a local file; a Hugging Face Hub dataset is read from local files only: download it "
                "first (huggingface-cli download --repo-type dataset ...) and name its Parquet/JSON files"
            ) from None
        raise AnnotationError(f"{path}: annotation file not found") from None
    if path.suffix == ".jsonl":
        return [_json(line, path, f"line {n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    data = _json(text, path, "file")
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _parquet_files(path: Path) -> list[str]:
    if path.is_dir():
        files = sorted(str(f) for f in path.rglob("*.parquet"))
        if not files:
            raise AnnotationError(f"{path}: annotation folder holds no .parquet shards")
        return files
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    return [str(path)]


def _read_parquet(path: Path) -> list:
    """Rows as plain records, streamed so that no Arrow copy of the file is cached beside it."""
    files = _parquet_files(path)
    try:
        import datasets
    except ImportError:
        raise AnnotationError(
            f"{path}: Parquet annotations are read with Hugging Face datasets: pip install -e '.[datasets]'"
        ) from None
    try:
        return list(datasets.load_dataset("parquet", data_files=files, split="train", streaming=True))
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError, its I/O errors OSErrors
        raise AnnotationError(f"{path}: not readable as Parquet ({type(err).__name__}: {err})") from None


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


Parser = Callable[[dict, Path, int, str, str], MediaRecord]


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


@dataclass(frozen=True)
class Dialect:
    """How a conversation format spells its turns: the list key, the role and text keys, the role names."""

    turns: str
    role: str
    text: str
    turn_noun: str
    roles: dict[str, str]

    def names(self, role: str) -> str:
        return "/".join(name for name, kind in self.roles.items() if kind == role)


LLAVA_DIALECT = Dialect("conversations", "from", "value", "conversation turn", {"human": "user", "gpt": "assistant"})
SHAREGPT_DIALECT = replace(
    LLAVA_DIALECT, roles={"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
)
OPENAI_DIALECT = Dialect("messages", "role", "content", "message", {"user": "user", "assistant": "assistant"})
# Function-calling turns (LLaMA-Factory's names): well-formed, but nothing this model learns from.
TOOL_ROLES = {"function_call", "observation", "tool", "function"}


def _dialogue(item: dict, path: Path, index: int, dialect: Dialect) -> tuple[str, list[tuple[str, str]]]:
    """The system text and the (user, assistant) text pairs of a conversation, placeholders still in."""
    turns = item.get(dialect.turns)
    if not isinstance(turns, list) or not turns:
        raise AnnotationError(f"{path}: record {index} has no non-empty {dialect.turns!r} list")
    for n, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get(dialect.text), str):
            raise AnnotationError(f"{path}: record {index}, {dialect.turn_noun} {n} has no string {dialect.text!r}")
    system, first = item.get("system") if isinstance(item.get("system"), str) else "", 0
    if turns[0].get(dialect.role) == "system":
        system, first = turns[0][dialect.text], 1
    roles = [t.get(dialect.role) for t in turns[first:]]
    kinds = [dialect.roles.get(role) if isinstance(role, str) else None for role in roles]
    expected = ["user", "assistant"] * (len(roles) // 2 + 1)
    bad = next((n for n, kind in enumerate(kinds) if kind != expected[n]), None)
    tool = next((role for role in roles if role in TOOL_ROLES), None)
    if tool is not None:
        raise SkipRecord(f"with tool turns ({dialect.role} {tool!r})")
    if bad is not None or len(roles) % 2 or not roles:
        user, assistant = dialect.names("user"), dialect.names("assistant")
        where = f"turn {first + bad} is from {roles[bad]!r}" if bad is not None else f"{len(roles)} turns"
        raise AnnotationError(
            f"{path}: record {index}: {dialect.turns} must alternate {user}/{assistant} turns, starting with "
            f"{user} and ending with {assistant} ({where})"
        )
    pairs = [(turns[n][dialect.text], turns[n + 1][dialect.text]) for n in range(first, len(turns), 2)]
    return system.strip(), pairs


def _unplaced(text: str) -> str:
    return PLACEHOLDER.sub(" ", text).strip()


def _qa(system: str, pairs: list[tuple[str, str]]) -> tuple[dict, ...]:
    """QA turns with the media placeholders removed: our prompt templates place the media themselves."""
    qa = tuple({"i": "", "q": _unplaced(q), "a": _unplaced(a) if PLACEHOLDER.search(a) else a} for q, a in pairs)
    qa[0]["i"] = _unplaced(system)
    return qa


def _llava_record(item: dict, path: Path, index: int, media: str, media_type: str) -> MediaRecord:
    """Human/gpt turns paired into QA turns, the media placeholder removed from the human text."""
    return MediaRecord(media, media_type, qa=_qa(*_dialogue(item, path, index, LLAVA_DIALECT)))


def _listed_media(item: object, path: Path, index: int, media_type: str, media_root: Path) -> str:
    """The one media file of a record that lists them (`videos`/`images`), or a counted skip."""
    if not isinstance(item, dict):
        raise AnnotationError(f"{path}: record {index} is {type(item).__name__}, expected an object")
    other = MEDIA_TYPES[1 - MEDIA_TYPES.index(media_type)]
    listed = {kind: item.get(f"{kind}s") or [] for kind in MEDIA_TYPES}
    for kind, files in listed.items():
        if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
            raise AnnotationError(f"{path}: record {index}: {kind + 's'!r} must be a list of paths")
    if listed[other]:
        raise SkipRecord(f"with {other}s in a {media_type} corpus")
    if len(listed[media_type]) != 1:
        raise SkipRecord(f"with {'no' if not listed[media_type] else 'more than one'} {media_type}")
    return str(media_root / listed[media_type][0])


def _placeholders(pairs: list[tuple[str, str]], system: str, media_type: str) -> None:
    """Exactly one `<video>`/`<image>` placeholder, of the record's media type, as LLaMA-Factory requires."""
    texts = [system] + [text for pair in pairs for text in pair]
    counts = {kind: sum(len(re.findall(f"<{kind}>", t, re.IGNORECASE)) for t in texts) for kind in MEDIA_TYPES}
    if counts[media_type] != 1 or any(counts[kind] for kind in MEDIA_TYPES if kind != media_type):
        raise SkipRecord(f"whose <{media_type}> placeholder count differs from its one {media_type}")


def _listed_record(dialect: Dialect) -> Parser:
    def parse(item: dict, path: Path, index: int, media: str, media_type: str) -> MediaRecord:
        system, pairs = _dialogue(item, path, index, dialect)
        _placeholders(pairs, system, media_type)
        return MediaRecord(media, media_type, qa=_qa(system, pairs))

    return parse


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


FORMATS: dict[str, Parser] = {
    "videochat2_caption": _caption_record,
    "videochat2_instruction": _instruction_record,
    "llava": _llava_record,
    "sharegpt": _listed_record(SHAREGPT_DIALECT),
    "openai": _listed_record(OPENAI_DIALECT),
    "mvbench": _mvbench_record,
}
# Formats whose records list their media (`videos`/`images`) instead of naming one (`video`/`image`).
LISTED_MEDIA = {"sharegpt", "openai"}
# The format a corpus entry has when it names none, by the task it serves.
DEFAULT_FORMAT = {
    "caption": "videochat2_caption",
    "instruction": "videochat2_instruction",
    "retrieval": "videochat2_caption",
}


def read_annotations(
    path: str | Path,
    media_root: str | Path,
    media_type: str,
    format: str = "videochat2_caption",
    reader: str = "decord",
    corpus: str = "",
) -> Annotations:
    """Every record of one annotation file in one of FORMATS, and those skipped by reason."""
    if media_type not in MEDIA_TYPES:
        raise AnnotationError(f"{path}: media_type must be one of {MEDIA_TYPES}, got {media_type!r}")
    if format not in FORMATS:
        raise AnnotationError(f"{path}: format must be one of {sorted(FORMATS)}, got {format!r}")
    if reader not in READERS:
        raise AnnotationError(f"{path}: reader must be one of {sorted(READERS)}, got {reader!r}")
    path, media_root, parse = Path(path), Path(media_root), FORMATS[format]
    media_path = _listed_media if format in LISTED_MEDIA else _media_path
    loaded = Annotations([])
    items = _read_list(path)
    for index, item in enumerate(items):
        try:
            record = parse(item, path, index, media_path(item, path, index, media_type, media_root), media_type)
        except SkipRecord as skip:
            loaded.skipped.setdefault(f"records {skip}", []).append(index)
            continue
        loaded.records.append(replace(record, reader=READERS[reader], corpus=corpus))
    if items and not loaded.records:
        raise AnnotationError(f"every record was skipped: {loaded.skip_report(path)}")
    return loaded


def load_records(
    path: str | Path,
    media_root: str | Path,
    media_type: str,
    format: str = "videochat2_caption",
    reader: str = "decord",
    corpus: str = "",
) -> list[MediaRecord]:
    """Every record of one annotation file, tagged with its video reader and corpus; skips are logged."""
    loaded = read_annotations(path, media_root, media_type, format, reader, corpus)
    if loaded.skipped:
        log.warning("corpus %s: %s", corpus or "-", loaded.skip_report(path))
    return loaded.records


def load_caption_records(path: str | Path, media_root: str | Path, media_type: str) -> list[MediaRecord]:
    """Read a VideoChat2 pretraining file (`{"video"|"image", "caption"}` records)."""
    return load_records(path, media_root, media_type, "videochat2_caption")


def load_instruction_records(path: str | Path, media_root: str | Path, media_type: str) -> list[MediaRecord]:
    """Read a VideoChat2 instruction file (`{"video"|"image", "QA": [{"i", "q", "a"}], "start"?, "end"?}`)."""
    return load_records(path, media_root, media_type, "videochat2_instruction")
