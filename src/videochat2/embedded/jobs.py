"""One clip per job: sampled, rendered and written by a worker process; the jobs of each split.

Training, retrieval and benchmark clips come from disjoint seed streams (`SPLIT_CODES`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from videochat2.embedded.captions import caption
from videochat2.embedded.render import render, write_frame_folder, write_mp4
from videochat2.embedded.tasks import TASKS, sample_clip


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


SPLIT_CODES = {"train": 1, "retrieval": 2, "bench": 3, "image": 4, "heldout": 5}


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
