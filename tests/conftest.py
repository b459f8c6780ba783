"""Shared fixtures: tiny media files written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    """Write uint8 frames [T,H,W,3] as an H.264 mp4 (frame t is recognisable by its brightness)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10", "g": "1"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def ramp_frames(num: int, size: int = 32) -> np.ndarray:
    """Frame t is a flat grey of value 8*t, so decoded frames reveal which index was read."""
    values = (np.arange(num) * 8).clip(0, 255).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (num, size, size, 3)).copy()


@pytest.fixture
def ramp_video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "ramp.mp4", ramp_frames(30))


@pytest.fixture
def still_image(tmp_path: Path) -> Path:
    path = tmp_path / "still.png"
    Image.fromarray(np.full((20, 30, 3), 200, dtype=np.uint8)).save(path)
    return path
