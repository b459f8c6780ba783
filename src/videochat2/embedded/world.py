"""The world's vocabulary and state: colours, shapes, scenes, glyphs, a clip's tracks, and placing objects.

A clip is a background, tracks (one object's shape, colour, position and visibility in every frame),
characters shown in the middle of the frame, and the events a question can ask about. The tasks write
events into these arrays; rendering draws them. `GENERATOR_VERSION` is recorded in every manifest: a
change to what any seed generates is a new version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
