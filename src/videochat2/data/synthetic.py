"""A procedural temporal video world: the embedded, self-contained dataset of the default run.

MVBench makes static tasks temporal ("is the man on stage?" becomes "which way does he move?"). This world
is built so that holds by construction: a few big, high-contrast shapes in a few colours on a dark
background, and events over time (moving in a direction with wrap-around, flashing N times, appearing
for a while, changing colour or disappearing, characters shown one after another, a scene cut, several
objects moving). The frame a one-frame model sees (the middle one) is uninformative for every task, the
answer vocabularies are balanced, and every question type of the benchmark also appears, on other clips,
in the stage-3 instruction data, so a tiny model can learn the whole pipeline on a CPU in minutes.

Layout under the root returned by :func:`build` (all media paths in annotation files are relative:
``video`` to ``<root>/videos/``, ``image`` to ``<root>/images/``; MVBench items to
``<root>/mvbench/video/<prefix>``)::

    videos/train/*.mp4, videos/retrieval/*.mp4    H.264 clips (8 fps; the frame-task clips 3 fps)
    images/*.jpg                                   still scenes for the image branch
    annotations/pretrain_video.json                [{"video", "caption"}]          stages 1-2
    annotations/pretrain_image.json                [{"image", "caption"}]
    annotations/instruction_video.json             [{"video", "QA": [{"i", "q", "a"}], ["start", "end"]}]
    annotations/instruction_video_mc.json          [{"video", "question", "candidates", "answer"[, "start", "end"]}]
    annotations/instruction_image.json             [{"image", "QA": [{"i", "q", "a"}]}]
    annotations/instruction_image_mc.json          [{"image", "question", "candidates", "answer"}]
    annotations/retrieval_test.json                [{"video", "caption"}]          held-out clips
    annotations/events.json                        ground truth of every clip, paths relative to the root
    mvbench/tasks.json                             see below
    mvbench/json/<task>.json                       [{"video", "question", "candidates", "answer"[, "start", "end"]}]
    mvbench/video/<prefix><name>.mp4 | <name>/00001.jpg ...   media (frame folders at 3 fps)
    tokenizers/qformer/, tokenizers/llm/           Hugging Face tokenizers trained on this corpus
    MANIFEST.json                                  seed, version, settings, counts, sha256 of every file

``mvbench/tasks.json`` maps a task name to how to read it, as the official evaluator's task list does::

    {"<task>": {"json": "<task>.json", "prefix": "<folder>/", "media_type": "video" | "frame",
                "bound": <bool: items carry start/end in seconds>, "abbr": "<XY>"}}

Multiple-choice instruction items are MVBench items of training clips (``*_mc.json``, the benchmark's own
item format), so training renders them in the benchmark's prompt and re-orders their options. Training,
retrieval and benchmark clips come from disjoint seed streams. Same seed and settings give byte-identical
files (single-threaded x264 with fixed options), so the manifest's checksums are reproducible.

Building is cached: a root whose manifest records the same settings is reused as is. A root built with
other settings is refused, not replaced: runs trained on it (and the embedded LLM pretrained under it,
`<root>/llm`) depend on its files and tokenizer ids, so other settings go to another root (`data.root=...`),
or replace it explicitly (`replace=True`, `--replace`). A build happens in a temporary sibling folder that
takes the root's place by renames only when complete. Command line::

    python -m videochat2.data.synthetic --out DIR [--seed S] [--train-videos N] [--images N] [--test-per-task N]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import secrets
import shutil
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from videochat2.data import qa_generation as qa
from videochat2.prompts import SYSTEM_PROMPT

GENERATOR_VERSION = "1.1"
FPS = 8
FRAME_FOLDER_FPS = 3

COLOURS = {
    "red": (235, 40, 40),
    "green": (40, 205, 60),
    "blue": (60, 110, 255),
    "yellow": (245, 225, 40),
    "magenta": (230, 70, 230),
    "cyan": (50, 225, 235),
}
FLASH_COLOUR = "white"
PALETTE = {**COLOURS, FLASH_COLOUR: (255, 255, 255)}
SHAPES = ("square", "circle", "triangle", "cross")
SCENES = {
    "gray": (100, 100, 100),
    "navy": (25, 35, 125),
    "maroon": (120, 30, 35),
    "olive": (95, 95, 20),
    "teal": (15, 95, 95),
}
BLANK = (0, 0, 0)
GLYPHS = {
    "F": ("11111", "10000", "10000", "11110", "10000", "10000", "10000"),
    "H": ("10001", "10001", "10001", "11111", "10001", "10001", "10001"),
    "K": ("10001", "10010", "10100", "11000", "10100", "10010", "10001"),
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "T": ("11111", "00100", "00100", "00100", "00100", "00100", "00100"),
    "X": ("10001", "10001", "01010", "00100", "01010", "10001", "10001"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
}
DIRECTIONS = ("left", "right", "up", "down")
STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
DIRECTION_WORDS = {"left": "to the left", "right": "to the right", "up": "upward", "down": "downward"}
COUNTS = ("once", "twice", "three times")
STATE_CHANGES = ("it changes colour", "it disappears", "it stays the same")
MOMENTS = ("at the beginning", "in the middle", "at the end")
MOMENT_SPANS = ((0.2, 0.3), (0.45, 0.55), (0.7, 0.8))

CAPTION_PROMPTS = (
    "Describe the following video concisely.",
    "Describe the video in detail.",
    "What happens in this video?",
    "Summarize the events of the video in order.",
)
IMAGE_PROMPTS = ("Describe the following image concisely.", "Describe the image in detail.", "What is in this image?")


@dataclass
class Track:
    """One object's state in every frame; events are written into these arrays."""

    shape: str
    colour: list[str]
    x: np.ndarray
    y: np.ndarray
    visible: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.colour[0]} {self.shape}"


@dataclass
class Clip:
    """A clip's full ground truth: per-frame state (what is drawn) and the events (what is asked)."""

    task: str
    fps: int
    background: list[str | None]
    tracks: list[Track]
    chars: list[str | None]
    events: list[dict]
    label: str
    fields: dict = field(default_factory=dict)
    distractors: list[str] | None = None
    bound: tuple[float, float] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.background)


@dataclass(frozen=True)
class TaskDef:
    """A benchmark task: how to sample its clips, ask about them, and lay them out like MVBench."""

    sampler: Callable[[np.random.Generator, int, int], Clip]
    templates: tuple[str, ...]
    vocabulary: tuple[str, ...] | None
    num_options: int
    prefix: str
    abbr: str
    media_type: str = "video"
    bound: bool = False

    def qa_task(self, name: str) -> qa.Task:
        builder = qa.fixed_vocabulary(self.vocabulary) if self.vocabulary else qa.per_record()
        return qa.Task(name, self.templates, builder, self.num_options)


# ---------------------------------------------------------------- world: objects, placement, tracks


def _objects(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    shapes = rng.permutation(SHAPES)[:n]
    colours = rng.permutation(list(COLOURS))[:n]
    return [(str(s), str(c)) for s, c in zip(shapes, colours)]


def _positions(rng: np.random.Generator, n: int, size: int) -> list[tuple[float, float]]:
    """Centres in distinct cells of a 3x3 grid, so big objects do not overlap."""
    cell = size / 3
    cells = rng.permutation(9)[:n]
    jitter = rng.uniform(-0.04, 0.04, size=(n, 2)) * size
    return [((c % 3 + 0.5) * cell + j[0], (c // 3 + 0.5) * cell + j[1]) for c, j in zip(cells, jitter)]


def _track(shape: str, colour: str, pos: tuple[float, float], frames: int) -> Track:
    return Track(shape, [colour] * frames, np.full(frames, pos[0]), np.full(frames, pos[1]), np.ones(frames, bool))


def _num_frames(rng: np.random.Generator, low: int = 28, high: int = 40) -> int:
    return int(rng.integers(low, high + 1))


def _clip(task: str, frames: int, rng: np.random.Generator, label: str = "", fps: int = FPS) -> Clip:
    background = str(rng.choice(list(SCENES)))
    clip = Clip(task, fps, [background] * frames, [], [None] * frames, [], label)
    clip.events.append({"type": "background", "scene": background, "start": 0, "end": frames - 1})
    return clip


def _add_static(clip: Clip, obj: tuple[str, str], pos: tuple[float, float]) -> Track:
    track = _track(*obj, pos, clip.num_frames)
    clip.tracks.append(track)
    clip.events.append({"type": "static", "object": track.name, "start": 0, "end": clip.num_frames - 1})
    return track


def _move_wrapping(track: Track, direction: str, distance: float, size: int, rng: np.random.Generator) -> None:
    """Constant motion on a torus from a uniform phase: one frame says nothing about the direction."""
    frames = len(track.x)
    dx, dy = STEP[direction]
    travelled = np.arange(frames) * distance / (frames - 1)
    axis = track.x if dx else track.y
    axis[:] = (rng.uniform(0, size) + (dx or dy) * travelled) % size


# ---------------------------------------------------------------- tasks


def _moving_direction(rng: np.random.Generator, label_index: int, size: int) -> Clip:
    direction = DIRECTIONS[label_index % len(DIRECTIONS)]
    clip = _clip("moving_direction", _num_frames(rng, 24, 40), rng, label=direction)
    mover_obj, other = _objects(rng, 2)
    pos = _positions(rng, 2, size)
    _add_static(clip, other, pos[1])
    mover = _track(*mover_obj, pos[0], clip.num_frames)
    _move_wrapping(mover, direction, size * rng.uniform(0.7, 1.0), size, rng)
    clip.tracks.append(mover)
    clip.events.append(
        {"type": "move", "object": mover.name, "direction": direction, "start": 0, "end": clip.num_frames - 1}
    )
    clip.fields = {"object": mover.name}
    return clip


def _pulse_starts(rng: np.random.Generator, frames: int, count: int, length: int, gap: int) -> list[int]:
    """Random pulse onsets with at least ``gap`` frames between pulses, none touching the middle frames."""
    middle = set(range(round(0.45 * frames), round(0.55 * frames) + 1))
    slack = frames - count * length - (count - 1) * gap - 2
    while True:
        extra = np.floor(rng.dirichlet(np.ones(count + 1)) * slack).astype(int)
        starts = list(1 + np.cumsum(extra[:count]) + np.arange(count) * (length + gap))
        if not any(middle.intersection(range(s, s + length)) for s in starts):
            return [int(s) for s in starts]


def _action_count(rng: np.random.Generator, label_index: int, size: int) -> Clip:
    """The flashes share a fixed total duration and skip the middle frame, so one frame does not hint at N."""
    count = label_index % len(COUNTS) + 1
    clip = _clip("action_count", _num_frames(rng, 36, 48), rng, label=COUNTS[count - 1])
    frames = clip.num_frames
    target_obj, other = _objects(rng, 2)
    pos = _positions(rng, 2, size)
    _add_static(clip, other, pos[1])
    target = _add_static(clip, target_obj, pos[0])
    length, gap = max(2, round(0.4 * frames / count)), round(0.12 * frames)
    starts = _pulse_starts(rng, frames, count, length, gap)
    for start in starts:
        target.colour[start : start + length] = [FLASH_COLOUR] * length
    clip.events.append(
        {
            "type": "flash",
            "object": target.name,
            "count": COUNTS[count - 1],
            "start": starts[0],
            "end": starts[-1] + length - 1,
            "pulses": [[s, s + length - 1] for s in starts],
        }
    )
    clip.fields = {"object": target.name}
    return clip


def _window_outside_middle(rng: np.random.Generator, frames: int, fraction: float) -> tuple[int, int]:
    """A window in the first or the second half that never covers the middle frame."""
    length = max(2, round(fraction * frames))
    if rng.random() < 0.5:
        start = int(rng.integers(round(0.06 * frames), round(0.42 * frames) - length + 1))
    else:
        start = int(rng.integers(round(0.58 * frames), round(0.94 * frames) - length + 1))
    return start, start + length - 1


def _object_existence(rng: np.random.Generator, label_index: int, size: int) -> Clip:
    clip = _clip("object_existence", _num_frames(rng, 28, 40), rng)
    objs = _objects(rng, 3)
    pos = _positions(rng, 3, size)
    for obj, p in zip(objs[1:], pos[1:]):
        _add_static(clip, obj, p)
    transient = _track(*objs[0], pos[0], clip.num_frames)
    start, end = _window_outside_middle(rng, clip.num_frames, rng.uniform(0.26, 0.34))
    transient.visible[:] = False
    transient.visible[start : end + 1] = True
    clip.tracks.append(transient)
    clip.events.append({"type": "transient", "object": transient.name, "start": start, "end": end})
    present = {f"{c} {s}" for s, c in objs}
    absent = [f"{c} {s}" for s, c in itertools.product(SHAPES, COLOURS) if f"{c} {s}" not in present]
    clip.label = transient.name
    clip.distractors = [str(d) for d in rng.permutation(absent)[:2]]
    return clip


def _char_slot(t: int, frames: int) -> int | None:
    """Four slots with a blank gap over the middle frames: [0, .22) [.22, .47) gap [.53, .78) [.78, 1]."""
    u = (t + 0.5) / frames
    if 0.47 <= u < 0.53:
        return None
    return sum(u >= edge for edge in (0.22, 0.47, 0.78))


def _character_order(rng: np.random.Generator, label_index: int, size: int) -> Clip:
    clip = _clip("character_order", _num_frames(rng, 28, 40), rng)
    chars = [str(c) for c in rng.permutation(list(GLYPHS))[:4]]
    clip.chars = [
        None if (slot := _char_slot(t, clip.num_frames)) is None else chars[slot] for t in range(clip.num_frames)
    ]
    for k, char in enumerate(chars):
        shown = [t for t, c in enumerate(clip.chars) if c == char]
        clip.events.append({"type": "char", "char": char, "order": k, "start": shown[0], "end": shown[-1]})
    clip.label = ", ".join(chars)
    others = {", ".join(p) for p in itertools.permutations(chars)} - {clip.label}
    clip.distractors = [str(d) for d in rng.permutation(sorted(others))[:6]]
    return clip


def _scene_transition(rng: np.random.Generator, label_index: int, size: int) -> Clip:
    """A cut through black around the middle; options are built around a hub scene so text alone is blind."""
    frames = _num_frames(rng, 28, 40)
    first, second, third = (str(s) for s in rng.permutation(list(SCENES))[:3])
    clip = Clip("scene_transition", FPS, [], [], [None] * frames, [], f"from {first} to {second}")
    phase = [0 if (t + 0.5) / frames < 0.42 else 1 if (t + 0.5) / frames < 0.58 else 2 for t in range(frames)]
    clip.background = [first if p == 0 else None if p == 1 else second for p in phase]
    objs, pos = _objects(rng, 4), _positions(rng, 4, size)
    for k, (obj, p) in enumerate(zip(objs, pos)):
        track = _track(*obj, p, frames)
        track.visible[:] = [ph == (0 if k < 2 else 2) for ph in phase]
        clip.tracks.append(track)
    cut = phase.index(1)
    clip.events = [{"type": "scene_change", "from": first, "to": second, "start": cut, "end": phase.index(2)}]
    hub, other = (first, second) if rng.random() < 0.5 else (second, first)
    clip.distractors = [
        d
        for d in (
            f"from {hub} to {other}",
            f"from {other} to {hub}",
            f"from {hub} to {third}",
            f"from {third} to {hub}",
        )
        if d != clip.label
    ]
    return clip


def _other_colour(rng: np.random.Generator, *used: str) -> str:
    return str(rng.choice([c for c in COLOURS if c not in used]))


def _state_change(rng: np.random.Generator, label_index: int, size: int) -> Clip:
    """The change comes after the middle frame, so that frame shows every clip in its initial state."""
    kind = STATE_CHANGES[label_index % len(STATE_CHANGES)]
    clip = _clip("state_change", _num_frames(rng, 28, 40), rng, label=kind)
    target_obj, other = _objects(rng, 2)
    pos = _positions(rng, 2, size)
    _add_static(clip, other, pos[1])
    target = _add_static(clip, target_obj, pos[0])
    when = round(rng.uniform(0.58, 0.78) * clip.num_frames)
    if kind == STATE_CHANGES[0]:
        new = _other_colour(rng, target.colour[0], other[1])
        target.colour[when:] = [new] * (clip.num_frames - when)
        clip.events.append(
            {
                "type": "colour_change",
                "object": target.name,
                "shape": target.shape,
                "from": target.colour[0],
                "to": new,
                "start": when,
                "end": when,
            }
        )
    elif kind == STATE_CHANGES[1]:
        target.visible[when:] = False
        clip.events.append({"type": "disappear", "object": target.name, "start": when, "end": when})
    clip.fields = {"shape": target.shape}
    return clip


def _action_localization(rng: np.random.Generator, label_index: int, size: int) -> Clip:
    """One colour change inside the bounded segment (asked about) and one outside it (a decoy)."""
    moment = label_index % len(MOMENTS)
    clip = _clip("action_localization", 64, rng, label=MOMENTS[moment])
    frames = clip.num_frames
    length = int(rng.integers(32, 41))
    start = int(rng.integers(6, frames - length - 6 + 1))
    inside = start + round(rng.uniform(*MOMENT_SPANS[moment]) * length)
    before = rng.random() < 0.5
    outside = int(rng.integers(2, start - 1) if before else rng.integers(start + length + 2, frames - 1))
    target_obj, other = _objects(rng, 2)
    pos = _positions(rng, 2, size)
    _add_static(clip, other, pos[1])
    target = _add_static(clip, target_obj, pos[0])
    colour = target.colour[0]
    for when in sorted((inside, outside)):
        new = _other_colour(rng, colour, other[1])
        target.colour[when:] = [new] * (frames - when)
        clip.events.append(
            {
                "type": "colour_change",
                "object": target.name,
                "shape": target.shape,
                "from": colour,
                "to": new,
                "start": when,
                "end": when,
                "in_bound": when == inside,
            }
        )
        colour = new
    clip.bound = (start / FPS, (start + length) / FPS)
    clip.fields = {"shape": target.shape}
    return clip


def _moving_attribute(rng: np.random.Generator, label_index: int, size: int) -> Clip:
    attribute = ("colour", "shape")[(label_index // 3) % 2]
    clip = _clip("moving_attribute", _num_frames(rng, 24, 40), rng)
    objs, pos = _objects(rng, 3), _positions(rng, 3, size)
    mover_index = label_index % 3
    for k, (obj, p) in enumerate(zip(objs, pos)):
        if k == mover_index:
            continue
        _add_static(clip, obj, p)
    mover = _track(*objs[mover_index], pos[mover_index], clip.num_frames)
    direction = str(rng.choice(DIRECTIONS))
    _move_wrapping(mover, direction, size * rng.uniform(0.7, 1.0), size, rng)
    clip.tracks.append(mover)
    clip.events.append(
        {"type": "move", "object": mover.name, "direction": direction, "start": 0, "end": clip.num_frames - 1}
    )
    pick = 1 if attribute == "colour" else 0
    clip.label = objs[mover_index][pick]
    clip.distractors = [o[pick] for k, o in enumerate(objs) if k != mover_index]
    clip.fields = {"attribute": attribute}
    return clip


def _slide(track: Track, start: int, end: int, size: int, rng: np.random.Generator) -> str:
    """Move the object a third of the frame over [start, end]; on the torus, so positions stay uniform."""
    direction = str(rng.choice(DIRECTIONS))
    dx, dy = STEP[direction]
    ramp = np.clip((np.arange(len(track.x)) - start) / max(1, end - start), 0, 1) * size / 3
    track.x[:] = (track.x[0] + dx * ramp) % size
    track.y[:] = (track.y[0] + dy * ramp) % size
    return direction


def _action_sequence(rng: np.random.Generator, label_index: int, size: int) -> Clip:
    """Two objects move one after the other inside the bound; a third moves outside it as a decoy."""
    clip = _clip("action_sequence", _num_frames(rng, 44, 54), rng, fps=FRAME_FOLDER_FPS)
    frames = clip.num_frames
    length = int(rng.integers(26, 31))
    start = int(rng.integers(7, frames - length - 7 + 1))
    objs = _objects(rng, 3)
    tracks = [_track(*obj, tuple(rng.uniform(0, size, 2)), frames) for obj in objs]
    clip.tracks.extend(tracks)
    decoy_len = 5
    decoy = start - decoy_len - 1 - int(rng.integers(0, 2)) if rng.random() < 0.5 else start + length + 1
    windows = [
        (start + round(0.1 * length), start + round(0.4 * length)),
        (start + round(0.6 * length), start + round(0.9 * length)),
        (decoy, decoy + decoy_len),
    ]
    for track, (a, b) in sorted(zip(tracks, windows), key=lambda tw: tw[1][0]):
        direction = _slide(track, a, b, size, rng)
        clip.events.append(
            {
                "type": "slide",
                "object": track.name,
                "direction": direction,
                "start": a,
                "end": b,
                "in_bound": track is not tracks[2],
            }
        )
    clip.label = tracks[0].name
    clip.distractors = [tracks[1].name, tracks[2].name]
    clip.bound = (start / clip.fps, (start + length) / clip.fps)
    return clip


TASKS: dict[str, TaskDef] = {
    "moving_direction": TaskDef(
        _moving_direction,
        (
            "Which direction does the {object} move?",
            "In which direction is the {object} moving?",
            "Where is the {object} heading during the video?",
        ),
        DIRECTIONS,
        4,
        "clevrer_like/video_validation/",
        "MD",
    ),
    "action_count": TaskDef(
        _action_count,
        (
            "How many times does the {object} flash?",
            "How often does the {object} blink?",
            "Count the flashes of the {object}. How many are there?",
        ),
        COUNTS,
        3,
        "perception_like/videos/",
        "AC",
    ),
    "object_existence": TaskDef(
        _object_existence,
        (
            "Which object appears for only part of the video?",
            "Which object shows up at some point and then goes away?",
            "Which of these objects comes into view during the video?",
        ),
        None,
        3,
        "clevrer_like/video_validation/",
        "OE",
    ),
    "character_order": TaskDef(
        _character_order,
        (
            "In what order are the characters shown?",
            "Which sequence of characters appears in the video?",
            "What is the order of the characters displayed on the screen?",
        ),
        None,
        3,
        "perception_like/videos/",
        "CO",
    ),
    "scene_transition": TaskDef(
        _scene_transition,
        (
            "How does the scene change in the video?",
            "What is the right description of the scene change?",
            "Which scene transition happens in the video?",
        ),
        None,
        4,
        "scene_like/video/",
        "ST",
    ),
    "state_change": TaskDef(
        _state_change,
        (
            "What happens to the {shape}?",
            "How does the {shape} change during the video?",
            "What is true about the {shape} at the end compared to the beginning?",
        ),
        STATE_CHANGES,
        3,
        "perception_like/videos/",
        "SC",
    ),
    "action_localization": TaskDef(
        _action_localization,
        (
            "When does the {shape} change colour?",
            "At what point in the video does the {shape} change its colour?",
            "When does the colour change of the {shape} happen?",
        ),
        MOMENTS,
        3,
        "sta_like/sta_video/",
        "AL",
        bound=True,
    ),
    "moving_attribute": TaskDef(
        _moving_attribute,
        (
            "What {attribute} is the moving object?",
            "What is the {attribute} of the object that moves?",
            "Which {attribute} does the moving object have?",
        ),
        None,
        3,
        "clevrer_like/video_validation/",
        "MA",
    ),
    "action_sequence": TaskDef(
        _action_sequence,
        (
            "Which object moves first?",
            "Which object is the first to start moving?",
            "Among these objects, which one moves before the others?",
        ),
        None,
        3,
        "tvqa_like/frames_fps3/",
        "AS",
        media_type="frame",
        bound=True,
    ),
}


def sample_clip(task: str, seed: Sequence[int], label_index: int, size: int = 64) -> Clip:
    """The clip of ``task`` for a seed; ``label_index`` cycles the answer so a task's labels stay balanced."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return TASKS[task].sampler(np.random.default_rng(list(seed)), label_index, size)


# ---------------------------------------------------------------- rendering and encoding


def _shape_mask(shape: str, side: int) -> np.ndarray:
    grid = (np.arange(side) + 0.5) / side * 2 - 1
    dx, dy = np.meshgrid(grid, grid)
    if shape == "square":
        return (np.abs(dx) <= 0.85) & (np.abs(dy) <= 0.85)
    if shape == "circle":
        return dx**2 + dy**2 <= 0.95
    if shape == "triangle":
        return (dy <= 0.85) & (np.abs(dx) <= (dy + 0.95) / 1.9)
    return ((np.abs(dx) <= 0.3) | (np.abs(dy) <= 0.3)) & (np.abs(dx) <= 0.95) & (np.abs(dy) <= 0.95)


def _glyph_mask(char: str, size: int) -> np.ndarray:
    scale = max(1, round(size * 0.09))
    bits = np.array([[c == "1" for c in row] for row in GLYPHS[char]])
    return np.kron(bits, np.ones((scale, scale), bool))


def _stamp(frame: np.ndarray, mask: np.ndarray, cx: float, cy: float, colour: tuple[int, int, int]) -> None:
    """Draw a mask centred at (cx, cy), wrapping around the edges (the world is a torus)."""
    h, w = mask.shape
    rows = (int(round(cy)) - h // 2 + np.arange(h)) % frame.shape[0]
    cols = (int(round(cx)) - w // 2 + np.arange(w)) % frame.shape[1]
    patch = frame[np.ix_(rows, cols)]
    patch[mask] = colour
    frame[np.ix_(rows, cols)] = patch


def render(clip: Clip, size: int = 64) -> np.ndarray:
    """Frames ``[T, size, size, 3]`` uint8 from the clip's per-frame state."""
    masks = {s: _shape_mask(s, round(size * 0.28)) for s in SHAPES}
    video = np.empty((clip.num_frames, size, size, 3), np.uint8)
    for t in range(clip.num_frames):
        frame = video[t]
        frame[:] = SCENES[clip.background[t]] if clip.background[t] else BLANK
        for track in clip.tracks:
            if track.visible[t]:
                _stamp(frame, masks[track.shape], track.x[t], track.y[t], PALETTE[track.colour[t]])
        if clip.chars[t]:
            _stamp(frame, _glyph_mask(clip.chars[t], size), size / 2, size / 2, PALETTE[FLASH_COLOUR])
    return video


# Reproducible x264: no macroblock tree and no rate-control or sync lookahead (see write_mp4).
X264_PARAMS = "mbtree=0:rc-lookahead=0:sync-lookahead=0"


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """H.264 in MP4, single-threaded, with fixed options, so the bytes depend only on the frames.

    x264's macroblock-tree rate control (with its lookahead) made about one clip in a few hundred encode
    differently from one build to the next, even on one thread; without it every encode of the same
    frames is the same file (tests/unit/test_synthetic.py builds twice and compares every byte).
    """
    import av  # only a build needs the encoder: readers of a built set import this module without PyAV

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        stream.options = {"crf": "12", "preset": "fast", "threads": "1", "x264-params": X264_PARAMS}
        for index, array in enumerate(frames):
            # Converted to the encoder's format here, and timestamped explicitly, so the encoder gets
            # exactly the same input every time.
            frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_frame_folder(folder: Path, frames: np.ndarray) -> None:
    """MVBench's episodic-reasoning layout: ``00001.jpg``, ``00002.jpg``, ... (fps fixed at 3 by readers)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, array in enumerate(frames, start=1):
        Image.fromarray(array).save(folder / f"{index:05d}.jpg", quality=95)


# ---------------------------------------------------------------- captions


def _event_sentence(event: dict, rng: random.Random) -> str | None:
    kind, obj = event["type"], event.get("object")
    options = {
        "background": [f"the background is {event.get('scene')}", f"the scene is {event.get('scene')}"],
        "static": [f"a {obj} stays still", f"a {obj} rests in place", f"a {obj} does not move"],
        "move": [
            f"the {obj} moves {DIRECTION_WORDS.get(event.get('direction'), '')}",
            f"the {obj} keeps moving {DIRECTION_WORDS.get(event.get('direction'), '')}",
            f"the {obj} travels {DIRECTION_WORDS.get(event.get('direction'), '')}",
        ],
        "slide": [
            f"the {obj} slides {DIRECTION_WORDS.get(event.get('direction'), '')}",
            f"the {obj} shifts {DIRECTION_WORDS.get(event.get('direction'), '')}",
        ],
        "flash": [f"the {obj} flashes {event.get('count')}", f"the {obj} blinks {event.get('count')}"],
        "transient": [f"a {obj} appears and then disappears", f"a {obj} shows up for a while and goes away"],
        "disappear": [f"the {obj} disappears", f"the {obj} vanishes"],
        "colour_change": [
            f"the {event.get('shape')} turns from {event.get('from')} to {event.get('to')}",
            f"the {event.get('shape')} changes colour from {event.get('from')} to {event.get('to')}",
        ],
        "char": [f"the character {event.get('char')} is shown", f"the screen shows {event.get('char')}"],
        "scene_change": [
            f"the scene changes from {event.get('from')} to {event.get('to')}",
            f"the scene cuts from {event.get('from')} to {event.get('to')}",
        ],
    }
    return rng.choice(options[kind])


def _sentence_case(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def caption(clip: Clip, rng: random.Random) -> str:
    """The setting, then the clip's events in temporal order, phrased from varied templates."""
    setting = [e for e in clip.events if e["type"] in ("background", "static")]
    happenings = sorted((e for e in clip.events if e not in setting), key=lambda e: e["start"])
    parts = [_sentence_case(", ".join(_event_sentence(e, rng) for e in setting))] if setting else []
    steps = [_event_sentence(e, rng) for e in happenings]
    if len(steps) > 1:
        steps = [f"{rng.choice(('first', 'at first', 'to begin with'))} {steps[0]}"] + [
            f"{rng.choice(('then', 'after that', 'next', 'later'))} {s}" for s in steps[1:]
        ]
    if steps:
        parts.append(_sentence_case(", ".join(steps)))
    return " ".join(parts)


def still_caption(objects: list[tuple[str, str]], scene: str, rng: random.Random) -> str:
    names = [f"a {c} {s}" for s, c in objects]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    text = rng.choice(
        [
            f"{listed} on a {scene} background",
            f"a {scene} background with {listed}",
            f"{listed} in front of a {scene} backdrop",
        ]
    )
    return text[0].upper() + text[1:] + "."


# ---------------------------------------------------------------- jobs (run in worker processes)


@dataclass(frozen=True)
class Job:
    """One clip to sample, render and write; everything it needs is in here, so workers are stateless."""

    task: str
    seed: tuple[int, ...]
    label_index: int
    path: str
    as_frames: bool
    root: str
    size: int


def run_job(job: Job) -> dict:
    """Write one clip's media and return its annotation (label, fields, caption, events, bound)."""
    clip = sample_clip(job.task, job.seed, job.label_index, job.size)
    frames = render(clip, job.size)
    target = Path(job.root) / job.path
    target.parent.mkdir(parents=True, exist_ok=True)
    if job.as_frames:
        write_frame_folder(target, frames)
    else:
        write_mp4(target, frames, clip.fps)
    return {
        "path": job.path,
        "task": clip.task,
        "num_frames": clip.num_frames,
        "fps": clip.fps,
        "size": job.size,
        "label": clip.label,
        "fields": clip.fields,
        "distractors": clip.distractors,
        "bound": clip.bound,
        "events": clip.events,
        "caption": caption(clip, random.Random(str(job.seed))),
    }


SPLIT_CODES = {"train": 1, "retrieval": 2, "bench": 3, "image": 4}


def _seed(seed: int, split: str, task: str, index: int) -> tuple[int, ...]:
    return (seed, SPLIT_CODES[split], list(TASKS).index(task), index)


def _train_jobs(settings: dict, root: Path) -> list[Job]:
    names = list(TASKS)
    jobs = []
    for i in range(settings["train_videos"]):
        task = names[i % len(names)]
        seed = _seed(settings["seed"], "train", task, i)
        path = f"videos/train/{task}_{i:05d}.mp4"
        jobs.append(Job(task, seed, i // len(names), path, False, str(root), settings["size"]))
    return jobs


def _retrieval_jobs(settings: dict, root: Path) -> list[Job]:
    names = list(TASKS)
    return [
        Job(
            names[i % len(names)],
            _seed(settings["seed"], "retrieval", names[i % len(names)], i),
            i // len(names),
            f"videos/retrieval/clip_{i:05d}.mp4",
            False,
            str(root),
            settings["size"],
        )
        for i in range(settings["retrieval_videos"])
    ]


def _bench_jobs(settings: dict, root: Path) -> list[Job]:
    jobs = []
    for task, spec in TASKS.items():
        frames = spec.media_type == "frame"
        for j in range(settings["test_per_task"]):
            name = f"{task}_{j:04d}" + ("" if frames else ".mp4")
            jobs.append(
                Job(
                    task,
                    _seed(settings["seed"], "bench", task, j),
                    j,
                    f"mvbench/video/{spec.prefix}{name}",
                    frames,
                    str(root),
                    settings["size"],
                )
            )
    return jobs


# ---------------------------------------------------------------- annotation files


def _strip(path: str, prefix: str) -> str:
    return path[len(prefix) :]


def _record(ann: dict, prefix: str) -> dict:
    record = {"video": _strip(ann["path"], prefix), "label": ann["label"], **ann["fields"]}
    if ann["distractors"] is not None:
        record["distractors"] = ann["distractors"]
    if ann["bound"] is not None:
        record["start"], record["end"] = ann["bound"]
    return record


def _open_answer(label: str) -> str:
    return label[0].upper() + label[1:] + "."


def _instruction_records(anns: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    """Per clip: an open record (caption + question) and a multiple-choice item in MVBench form."""
    rng = random.Random(seed)
    open_records, choices = [], []
    for task, spec in TASKS.items():
        mine = [a for a in anns if a["task"] == task]
        items, _ = qa.build_items([_record(a, "videos/") for a in mine], spec.qa_task(task), seed=seed)
        for ann, item in zip(mine, items):
            bound = {"start": item["start"], "end": item["end"]} if "start" in item else {}
            choices.append(item)
            open_qa = [
                {"i": "", "q": rng.choice(CAPTION_PROMPTS), "a": ann["caption"]},
                {"i": "", "q": item["question"], "a": _open_answer(item["answer"])},
            ]
            open_records.append({"video": item["video"], "QA": open_qa, **bound})
    return sorted(open_records, key=lambda r: r["video"]), sorted(choices, key=lambda r: r["video"])


def _benchmark(anns: list[dict], seed: int) -> dict[str, list[dict]]:
    out = {}
    for task, spec in TASKS.items():
        records = [_record(a, f"mvbench/video/{spec.prefix}") for a in anns if a["task"] == task]
        out[task], _ = qa.build_items(records, spec.qa_task(task), seed=seed + 1, source=f"synthetic {task}")
    return out


def _tasks_json() -> dict:
    return {
        task: {
            "json": f"{task}.json",
            "prefix": spec.prefix,
            "media_type": spec.media_type,
            "bound": spec.bound,
            "abbr": spec.abbr,
        }
        for task, spec in TASKS.items()
    }


# ---------------------------------------------------------------- still images


IMAGE_TASKS = (
    qa.Task(
        "image_colour",
        ("What colour is the {shape}?", "Which colour does the {shape} have?"),
        qa.fixed_vocabulary(tuple(COLOURS)),
        4,
    ),
    qa.Task(
        "image_shape",
        ("What shape is the {colour} object?", "Which shape has the colour {colour}?"),
        qa.fixed_vocabulary(SHAPES),
        4,
    ),
)


def _write_images(root: Path, settings: dict) -> tuple[list[dict], tuple[list[dict], list[dict]]]:
    """Still scenes: captions for pretraining and colour/shape questions for instruction tuning."""
    captions, records = [], []
    for i in range(settings["images"]):
        rng = np.random.default_rng(list(_seed(settings["seed"], "image", "moving_direction", i)))
        objs = _objects(rng, int(rng.integers(1, 4)))
        clip = Clip("image", 1, [str(rng.choice(list(SCENES)))], [], [None], [], "")
        clip.tracks = [_track(s, c, p, 1) for (s, c), p in zip(objs, _positions(rng, len(objs), settings["size"]))]
        name = f"img_{i:05d}.jpg"
        Image.fromarray(render(clip, settings["size"])[0]).save(root / "images" / name, quality=95)
        text_rng = random.Random(i + settings["seed"] * 100003)
        captions.append({"image": name, "caption": still_caption(objs, clip.background[0], text_rng)})
        shape, colour = objs[0]
        records.append(
            {"video": name, "label": colour, "shape": shape, "colour": colour, "caption": captions[-1]["caption"]}
        )
    return captions, _image_instructions(records, settings["seed"])


def _image_instructions(records: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    """Per image: an open record (caption + one question) and the other question as a multiple-choice item."""
    rng = random.Random(seed)
    colour_items, _ = qa.build_items(records, IMAGE_TASKS[0], seed=seed)
    shape_items, _ = qa.build_items([{**r, "label": r["shape"]} for r in records], IMAGE_TASKS[1], seed=seed)
    open_records, choices = [], []
    for record, c_item, s_item in zip(records, colour_items, shape_items):
        item = c_item if rng.random() < 0.5 else s_item
        other = s_item if item is c_item else c_item
        choices.append({"image": record["video"], **{k: item[k] for k in ("question", "candidates", "answer")}})
        open_qa = [
            {"i": "", "q": rng.choice(IMAGE_PROMPTS), "a": record["caption"]},
            {"i": "", "q": other["question"], "a": _open_answer(other["answer"])},
        ]
        open_records.append({"image": record["video"], "QA": open_qa})
    return open_records, choices


# ---------------------------------------------------------------- tokenizers


PROMPT_VOCABULARY = (
    SYSTEM_PROMPT,
    "Question:",
    "Options:",
    "Only give the best option.",
    "Best option:(",
    "Best Option:(",
    "###Human:",
    "###Assistant:",
    "###",
    "[INST]",
    "[/INST]",
    "<Video>",
    "</Video>",
    "<Image>",
    "</Image>",
    "<VideoHere>",
    "<ImageHere>",
    *CAPTION_PROMPTS,
    *IMAGE_PROMPTS,
    "The video contains 8 frames sampled at 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5 seconds.",
    "(A) (B) (C) (D) (E) A B C D E 0 1 2 3 4 5 6 7 8 9",
)


def _corpus(annotations: dict[str, list[dict]], benchmark: dict[str, list[dict]]) -> list[str]:
    texts = list(PROMPT_VOCABULARY)
    for name in ("pretrain_video", "pretrain_image", "retrieval_test"):
        texts += [r["caption"] for r in annotations[name]]
    for name in ("instruction_video", "instruction_image"):
        texts += [f"{t['i']} {t['q']} {t['a']}" for r in annotations[name] for t in r["QA"]]
    for name in ("instruction_video_mc", "instruction_image_mc"):
        texts += [f"{qa.format_question(i['question'], i['candidates'])} {i['answer']}" for i in annotations[name]]
    texts += [qa.format_question(i["question"], i["candidates"]) for items in benchmark.values() for i in items]
    return texts


def _wordpiece_vocab(tok: Tokenizer, corpus: Sequence[str], vocab_size: int, specials: list[str]) -> dict[str, int]:
    """Every character (alone and as a ``##`` continuation), then the most frequent whole words.

    Built from counts with a total order rather than with the library's trainer, whose ties are broken in
    hash order and so change from run to run; reproducible checksums need the same vocabulary every time.
    """
    words: dict[str, int] = {}
    for text in corpus:
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)):
            words[word] = words.get(word, 0) + 1
    chars = sorted({c for w in words for c in w})
    pieces = specials + chars + [f"##{c}" for c in chars]
    ranked = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))
    pieces += ranked[: max(0, vocab_size - len(pieces))]
    return {piece: index for index, piece in enumerate(pieces)}


def _save_qformer_tokenizer(corpus: Sequence[str], out: Path, vocab_size: int = 1000) -> None:
    """BERT-style WordPiece: [CLS] text [SEP], lowercase, with [DEC] as the captioning bos token."""
    from transformers import PreTrainedTokenizerFast  # heavy; only the main process needs it

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.model = models.WordPiece(_wordpiece_vocab(tok, corpus, vocab_size, specials), unk_token="[UNK]")
    tok.add_special_tokens(specials)
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.BertProcessing(
        ("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]"))
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[DEC]",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    wrapped.save_pretrained(str(out))


def _save_llm_tokenizer(corpus: Sequence[str], out: Path, vocab_size: int = 1500) -> None:
    """Byte-level BPE where every punctuation mark is its own token, so "(" + "A" survive any context."""
    from transformers import PreTrainedTokenizerFast  # heavy; only the main process needs it

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[^\w\s]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1", special_tokens=[bos])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    wrapped.save_pretrained(str(out))


def train_tokenizers(corpus: Sequence[str], out_dir: Path) -> None:
    """WordPiece for the Q-Former and byte-level BPE for the LLM, both loadable with AutoTokenizer."""
    _save_qformer_tokenizer(corpus, out_dir / "qformer")
    _save_llm_tokenizer(corpus, out_dir / "llm")


# ---------------------------------------------------------------- build


def _settings(seed: int, train_videos: int, images: int, test_per_task: int, retrieval_videos: int, size: int) -> dict:
    values = {
        "seed": seed,
        "train_videos": train_videos,
        "images": images,
        "test_per_task": test_per_task,
        "retrieval_videos": retrieval_videos,
        "size": size,
    }
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    if size < 32 or size % 2:
        raise ValueError(f"size must be an even number of pixels >= 32, got {size}")
    if train_videos < len(TASKS) or test_per_task < 1:
        raise ValueError(f"need train_videos >= {len(TASKS)} (one per task) and test_per_task >= 1")
    return {"generator_version": GENERATOR_VERSION, **values}


def _differences(built: dict, wanted: dict) -> str:
    """`train_videos=2000 (now 500), ...`: the settings a root was built with that differ from the wanted ones."""
    keys = [k for k in sorted(set(built) | set(wanted)) if built.get(k) != wanted.get(k)]
    return ", ".join(f"{k}={built.get(k)!r} (now {wanted.get(k)!r})" for k in keys)


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / "MANIFEST.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=False))


def _checksums(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _render_all(jobs: list[Job], workers: int) -> list[dict]:
    if workers <= 1:
        return [run_job(job) for job in jobs]
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(run_job, jobs, chunksize=16))


def _build_into(root: Path, settings: dict, workers: int) -> dict:
    """Everything but the manifest's final rename; returns the manifest."""
    (root / "images").mkdir(parents=True)
    train, retrieval, bench = _train_jobs(settings, root), _retrieval_jobs(settings, root), _bench_jobs(settings, root)
    anns = _render_all(train + retrieval + bench, workers)
    split = (len(train), len(train) + len(retrieval))
    train_anns, retrieval_anns, bench_anns = anns[: split[0]], anns[split[0] : split[1]], anns[split[1] :]
    image_captions, (image_open, image_choices) = _write_images(root, settings)
    video_open, video_choices = _instruction_records(train_anns, settings["seed"])
    annotations = {
        "pretrain_video": [{"video": _strip(a["path"], "videos/"), "caption": a["caption"]} for a in train_anns],
        "pretrain_image": image_captions,
        "instruction_video": video_open,
        "instruction_video_mc": video_choices,
        "instruction_image": image_open,
        "instruction_image_mc": image_choices,
        "retrieval_test": [{"video": _strip(a["path"], "videos/"), "caption": a["caption"]} for a in retrieval_anns],
        "events": anns,
    }
    for name, data in annotations.items():
        _write_json(root / "annotations" / f"{name}.json", data)
    benchmark = _benchmark(bench_anns, settings["seed"])
    for task, items in benchmark.items():
        _write_json(root / "mvbench" / "json" / f"{task}.json", items)
    _write_json(root / "mvbench" / "tasks.json", _tasks_json())
    train_tokenizers(_corpus(annotations, benchmark), root / "tokenizers")
    counts = {name: len(data) for name, data in annotations.items()}
    counts["mvbench"] = {task: len(items) for task, items in benchmark.items()}
    return {**settings, "settings": settings, "tasks": _tasks_json(), "counts": counts, "checksums": _checksums(root)}


def _sibling(root: Path, purpose: str) -> Path:
    """A hidden, unique name next to the root (same file system, so renames are atomic)."""
    return root.parent / f".{root.name}.{purpose}-{os.getpid()}-{secrets.token_hex(4)}"


def _replace(root: Path, fresh: Path) -> None:
    """Swap the finished build in by renames, so no reader ever sees a half-old, half-new set."""
    if not root.exists():
        fresh.rename(root)
        return
    old = _sibling(root, "old")
    root.rename(old)
    fresh.rename(root)
    shutil.rmtree(old, ignore_errors=True)


def build(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    train_videos: int = 2000,
    images: int = 300,
    test_per_task: int = 50,
    retrieval_videos: int = 100,
    size: int = 64,
    workers: int | None = None,
    replace: bool = False,
) -> Path:
    """Generate the dataset under ``out_dir`` (the root) unless a complete build with these settings is there.

    A root built with other settings is an error unless `replace` (see the module docstring for why).
    """
    root = Path(out_dir).resolve()
    settings = _settings(seed, train_videos, images, test_per_task, retrieval_videos, size)
    manifest = _read_manifest(root)
    if manifest is not None and manifest.get("settings") == settings:
        return root
    if manifest is not None and not replace:
        raise FileExistsError(
            f"{root} holds the synthetic world built with {_differences(manifest.get('settings') or {}, settings)}; "
            "runs trained on it depend on it: build these settings under another root (data.root=<dir>) "
            "or replace it explicitly (--replace)"
        )
    if manifest is None and root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty and holds no synthetic MANIFEST.json; refusing to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    fresh = _sibling(root, "building")
    fresh.mkdir()
    try:
        manifest = _build_into(fresh, settings, workers or os.cpu_count() or 1)
        _write_json(fresh / "MANIFEST.json", manifest)
        _replace(root, fresh)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the set and print where it is."""
    parser = argparse.ArgumentParser(prog="python -m videochat2.data.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="dataset root to create (reused if already built)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-videos", type=int, default=2000)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--test-per-task", type=int, default=50)
    parser.add_argument("--retrieval-videos", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--replace", action="store_true", help="replace a set built there with other settings")
    args = parser.parse_args(argv)
    try:
        root = build(
            args.out,
            seed=args.seed,
            train_videos=args.train_videos,
            images=args.images,
            test_per_task=args.test_per_task,
            retrieval_videos=args.retrieval_videos,
            size=args.size,
            workers=args.workers,
            replace=args.replace,
        )
    except (ValueError, FileExistsError, qa.QAGenerationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
