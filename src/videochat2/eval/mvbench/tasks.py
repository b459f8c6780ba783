"""MVBench tasks and their questions, for every on-disk layout we accept.

Three layouts are recognised from the root folder, in this order of precedence:

- ``tasks.json`` (our own schema, so users can run their own MVBench-style tasks)::

      {"<task name>": {"json": "x.json", "prefix": "folder/", "media_type": "video",
                       "bound": false, "abbr": "XY", "labelled": true}}

  ``media_type`` is video | frame | gif, ``abbr`` is optional; the question files
  live in ``<root>/json/`` and the media in ``<root>/video/<prefix>``. A question
  may carry a ``context`` text (e.g. a video's subtitles) that the prompt shows
  before it. ``labelled: false`` marks a task whose answers are withheld (a
  leaderboard's hidden set): its questions need no ``answer``, are answered but
  not scored, so their predictions can be submitted elsewhere.
- the official ``main`` branch (``json/`` folder): the 20 tasks of the reference
  evaluator, raw videos under ``<root>/video/<prefix>`` trimmed by ``start``/``end``.
- the pre-cut ``video`` branch (``test.json`` with ``root`` and ``meta``): clips
  already trimmed, so no bounds; media under ``<root>/<prefix>``. That branch
  also ships a ``json/`` folder, which is why ``test.json`` is checked first.

Every question is validated when loaded, because a silently wrong gold letter
(the reference evaluator turns a missing answer into option ``(@)``) corrupts the
score without any error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MEDIA_TYPES = ("video", "frame", "gif")
# Frame folders (TVQA) have no container fps; the reference assumes 3 (gif: 25).
FRAME_FOLDER_FPS = 3.0
GIF_FPS = 25.0


@dataclass(frozen=True)
class TaskSpec:
    """One task: where its questions and media are and how its clips are cut."""

    name: str
    json_name: str
    prefix: str
    media_type: str
    bound: bool
    abbr: str
    labelled: bool = True


@dataclass(frozen=True)
class MVBenchQuestion:
    """One normalised multiple-choice item, ready for frame sampling and prompting."""

    task: str
    index: int
    video: Path
    media_type: str
    bound: tuple[float, float] | None
    question: str
    candidates: tuple[str, ...]
    answer: str
    gold: str | None
    cache_key: tuple[str, str, float | None, float | None]
    context: str | None = None

    @property
    def gold_option(self) -> str:
        """The reference evaluator's ground-truth string, e.g. ``"(B) Took the box."``."""
        return f"({self.gold}) {self.answer}"


def _spec(name: str, stem: str, prefix: str, bound: bool, abbr: str, media: str = "video") -> TaskSpec:
    return TaskSpec(name, f"{stem}.json", prefix, media, bound, abbr)


# (display name, json stem, main-branch prefix, bound, abbreviation), paper order.
OFFICIAL_TASKS: tuple[TaskSpec, ...] = (
    _spec("Action Sequence", "action_sequence", "star/Charades_v1_480/", True, "AS"),
    _spec("Action Prediction", "action_prediction", "star/Charades_v1_480/", True, "AP"),
    _spec("Action Antonym", "action_antonym", "ssv2_video/", False, "AA"),
    _spec("Fine-grained Action", "fine_grained_action", "Moments_in_Time_Raw/videos/", False, "FA"),
    _spec("Unexpected Action", "unexpected_action", "FunQA_test/test/", False, "UA"),
    _spec("Object Existence", "object_existence", "clevrer/video_validation/", False, "OE"),
    _spec("Object Interaction", "object_interaction", "star/Charades_v1_480/", True, "OI"),
    _spec("Object Shuffle", "object_shuffle", "perception/videos/", False, "OS"),
    _spec("Moving Direction", "moving_direction", "clevrer/video_validation/", False, "MD"),
    _spec("Action Localization", "action_localization", "sta/sta_video/", True, "AL"),
    _spec("Scene Transition", "scene_transition", "scene_qa/video/", False, "ST"),
    _spec("Action Count", "action_count", "perception/videos/", False, "AC"),
    _spec("Moving Count", "moving_count", "clevrer/video_validation/", False, "MC"),
    _spec("Moving Attribute", "moving_attribute", "clevrer/video_validation/", False, "MA"),
    _spec("State Change", "state_change", "perception/videos/", False, "SC"),
    _spec("Fine-grained Pose", "fine_grained_pose", "nturgbd/", False, "FP"),
    _spec("Character Order", "character_order", "perception/videos/", False, "CO"),
    _spec("Egocentric Navigation", "egocentric_navigation", "vlnqa/", False, "EN"),
    _spec("Episodic Reasoning", "episodic_reasoning", "tvqa/frames_fps3_hq/", True, "ER", "frame"),
    _spec(
        "Counterfactual Inference",
        "counterfactual_inference",
        "clevrer/video_validation/",
        False,
        "CI",
    ),
)

# Folder prefixes of the pre-cut ``video`` branch where they differ from main.
VIDEO_BRANCH_PREFIXES: dict[str, str] = {
    "Action Sequence": "star/Charades_segment/",
    "Action Prediction": "star/Charades_segment/",
    "Action Antonym": "ssv2_video_mp4/",
    "Object Interaction": "star/Charades_segment/",
    "Action Localization": "sta/sta_video_segment/",
    "Fine-grained Pose": "nturgbd_convert/",
    "Episodic Reasoning": "tvqa/video_fps3_hq_segment/",
}


def media_fps(media_type: str) -> float | None:
    """The fps the reference assumes for media without a container rate (None: read it)."""
    return {"frame": FRAME_FOLDER_FPS, "gif": GIF_FPS}.get(media_type)


def detect_layout(root: str | Path) -> str:
    """``"tasks_json"``, ``"main"`` or ``"video_branch"``, from what the root folder holds."""
    root = Path(root)
    if (root / "tasks.json").is_file():
        return "tasks_json"
    if (root / "test.json").is_file():
        return "video_branch"
    if (root / "json").is_dir():
        return "main"
    raise FileNotFoundError(
        f"{root} is not an MVBench root: expected tasks.json, a json/ folder (main branch) or test.json (video branch)"
    )


def video_branch_tasks() -> tuple[TaskSpec, ...]:
    """The official tasks with the ``video``-branch prefixes and no bounds."""
    return tuple(
        TaskSpec(t.name, t.json_name, VIDEO_BRANCH_PREFIXES.get(t.name, t.prefix), "video", False, t.abbr)
        for t in OFFICIAL_TASKS
    )


def read_json(path: Path) -> object:
    """A JSON file's content; malformed JSON is one line naming the file (json's own message names none)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def read_tasks_json(path: str | Path) -> tuple[TaskSpec, ...]:
    """Parse and validate a ``tasks.json`` file (schema in the module docstring)."""
    path = Path(path)
    raw = read_json(path)
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected a non-empty object {{task name: spec}}")
    return tuple(_task_from_json(path, name, entry) for name, entry in raw.items())


def _task_from_json(path: Path, name: str, entry: object) -> TaskSpec:
    allowed = {"json", "prefix", "media_type", "bound", "abbr", "labelled"}
    if not isinstance(entry, dict) or not {"json", "prefix"} <= entry.keys():
        raise ValueError(f"{path}: task {name!r} needs at least 'json' and 'prefix'")
    unknown = set(entry) - allowed
    if unknown:
        raise ValueError(f"{path}: task {name!r} has unknown keys {sorted(unknown)}")
    media_type = entry.get("media_type", "video")
    if media_type not in MEDIA_TYPES:
        raise ValueError(f"{path}: task {name!r} media_type must be one of {MEDIA_TYPES}")
    abbr = entry.get("abbr") or _default_abbr(name)
    bound, labelled = bool(entry.get("bound", False)), bool(entry.get("labelled", True))
    return TaskSpec(name, entry["json"], entry["prefix"], media_type, bound, abbr, labelled)


def _default_abbr(name: str) -> str:
    return "".join(word[0] for word in name.replace("_", " ").split()).upper()


def load_questions(root: str | Path, tasks: Sequence[str] | None = None) -> list[MVBenchQuestion]:
    """All questions of ``root`` (or of the named ``tasks``), task by task, in file order."""
    return list(iter_questions(root, tasks))


def iter_questions(root: str | Path, tasks: Sequence[str] | None = None) -> Iterator[MVBenchQuestion]:
    """Yield validated questions; see the module docstring for the layouts."""
    root = Path(root)
    layout = detect_layout(root)
    if layout == "video_branch":
        yield from _iter_video_branch(root, tasks)
        return
    specs = read_tasks_json(root / "tasks.json") if layout == "tasks_json" else OFFICIAL_TASKS
    for spec in _select(specs, tasks, root):
        source = root / "json" / spec.json_name
        if not source.is_file():
            raise FileNotFoundError(f"task {spec.name!r}: question file {source} is missing")
        items = read_json(source)
        yield from _normalise_items(spec, items, root / "video", str(source))


def _select(specs: Sequence[TaskSpec], tasks: Sequence[str] | None, root: Path) -> list[TaskSpec]:
    if tasks is None:
        return list(specs)
    by_name = {s.name: s for s in specs} | {s.abbr: s for s in specs}
    unknown = [t for t in tasks if t not in by_name]
    if unknown:
        raise KeyError(f"unknown tasks {unknown} in {root}; known: {[s.name for s in specs]}")
    return [by_name[t] for t in tasks]


def _iter_video_branch(root: Path, tasks: Sequence[str] | None) -> Iterator[MVBenchQuestion]:
    source = root / "test.json"
    raw = read_json(source)
    if not isinstance(raw, dict) or not {"root", "meta"} <= raw.keys():
        raise ValueError(f"{source}: expected top-level keys 'root' and 'meta'")
    specs = _video_branch_specs(raw["root"], raw["meta"])
    for spec in _select(specs, tasks, root):
        where = f"{source} meta[{spec.name!r}]"
        yield from _normalise_items(spec, raw["meta"][spec.name], root, where)


def _video_branch_specs(prefixes: dict, meta: dict) -> list[TaskSpec]:
    known = {t.name: t for t in video_branch_tasks()}
    known |= {Path(t.json_name).stem: t for t in video_branch_tasks()}
    specs = []
    for name in meta:
        base = known.get(name)
        prefix = prefixes.get(name, base.prefix if base else None)
        if prefix is None:
            raise ValueError(f"test.json: task {name!r} has no folder in 'root'")
        abbr = base.abbr if base else _default_abbr(name)
        json_name = base.json_name if base else f"{name}.json"
        specs.append(TaskSpec(name, json_name, prefix, "video", False, abbr))
    return specs


def _normalise_items(spec: TaskSpec, items: object, media_root: Path, source: str) -> Iterator[MVBenchQuestion]:
    if not isinstance(items, list):
        raise ValueError(f"{source}: expected a list of question items")
    for index, item in enumerate(items):
        yield _normalise(spec, index, item, media_root, source)


def _normalise(spec: TaskSpec, index: int, item: object, media_root: Path, source: str) -> MVBenchQuestion:
    where = f"{source} item {index}"
    required = ("video", "question", "candidates") + (("answer",) if spec.labelled else ())
    required += ("start", "end") if spec.bound else ()
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object, got {type(item).__name__}")
    missing = [k for k in required if k not in item]
    if missing:
        raise ValueError(f"{where}: missing fields {missing}")
    candidates = item["candidates"]
    if not isinstance(candidates, list) or not candidates or len(candidates) > 26:
        raise ValueError(f"{where}: 'candidates' must be a list of 1 to 26 option texts")
    candidates = tuple(str(c) for c in candidates)
    answer, gold = _gold(item, candidates, spec.labelled, where)
    context = item.get("context")
    if context is not None and not isinstance(context, str):
        raise ValueError(f"{where}: 'context' must be a string")
    bound = (float(item["start"]), float(item["end"])) if spec.bound else None
    start, end = bound if bound else (None, None)
    return MVBenchQuestion(
        task=spec.name,
        index=index,
        video=media_root / spec.prefix / str(item["video"]),
        media_type=spec.media_type,
        bound=bound,
        question=str(item["question"]),
        candidates=candidates,
        answer=answer,
        gold=gold,
        cache_key=(spec.prefix, str(item["video"]), start, end),
        context=context or None,
    )


def _gold(item: dict, candidates: tuple[str, ...], labelled: bool, where: str) -> tuple[str, str | None]:
    """(answer text, gold letter); an unlabelled task's questions have neither."""
    if not labelled:
        return "", None
    answer = str(item["answer"])
    if answer not in candidates:
        raise ValueError(f"{where}: answer {answer!r} is not among the candidates {list(candidates)}")
    return answer, chr(ord("A") + candidates.index(answer))
