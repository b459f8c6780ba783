"""Shared fixtures: tiny media files, a small synthetic world and a run trained on it (all made by the tests)."""

from __future__ import annotations

import subprocess
import sys
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


REPO = Path(__file__).resolve().parents[1]
# A small synthetic world: enough for every task to appear, fast to build and to train on.
SMALL_SYNTHETIC = {"train_videos": 40, "images": 10, "test_per_task": 4, "retrieval_videos": 10}


def run_script(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run train.py / eval.py as a user would, from the repository root."""
    result = subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def train_overrides(dirs: dict[str, Path], run: str = "t", steps: int = 3) -> list[str]:
    """Overrides that point a command at the small set and keep it to a few steps."""
    small = [f"data.synthetic.{k}={v}" for k, v in SMALL_SYNTHETIC.items()]
    return [
        f"paths.data_dir={dirs['data']}",
        f"paths.output_root={dirs['out']}",
        f"run_name={run}",
        f"trainer.max_steps={steps}",
        "data.num_workers=0",
        "data.batch_size=4",
        "data.embedded_llm.steps=120",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        *small,
    ]


@pytest.fixture(scope="session")
def dirs(tmp_path_factory) -> dict[str, Path]:
    """The small synthetic set and an output root, shared by every end-to-end test."""
    from videochat2.embedded.build import build

    data_dir = tmp_path_factory.mktemp("data")
    build(data_dir / "synthetic", **SMALL_SYNTHETIC)
    return {"data": data_dir, "out": tmp_path_factory.mktemp("outputs")}


@pytest.fixture(scope="session")
def chained_run(dirs) -> Path:
    """Run `t`: stage 1, `stage=2 model.num_query=64`, then stage 3, three steps each (the README's commands)."""
    run_script("train.py", *train_overrides(dirs))
    run_script("train.py", "stage=2", "model.num_query=64", *train_overrides(dirs))
    run_script("train.py", "stage=3", *train_overrides(dirs))
    return dirs["out"] / "t"
