"""Frames from a clip's state, and the media files they are written to (H.264 MP4, frame folders)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from videochat2.embedded.world import BLANK, FLASH_COLOUR, GLYPHS, PALETTE, SCENES, SHAPES, Clip


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
