"""The nine benchmark tasks: how each samples a clip, asks about it, and is laid out like MVBench.

Every task is temporal by construction: the middle frame, which a one-frame model sees, says nothing about
the answer, and a task's answers are balanced by `label_index`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from videochat2.data import qa_generation as qa
from videochat2.embedded.world import (
    COLOURS,
    COUNTS,
    DIRECTIONS,
    FLASH_COLOUR,
    FPS,
    FRAME_FOLDER_FPS,
    GLYPHS,
    MOMENT_SPANS,
    MOMENTS,
    SCENES,
    SHAPES,
    STATE_CHANGES,
    STEP,
    Clip,
    Track,
    _add_static,
    _clip,
    _move_wrapping,
    _num_frames,
    _objects,
    _positions,
    _track,
)


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
