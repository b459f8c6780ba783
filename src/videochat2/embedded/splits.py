"""The world's other splits as MVBench-format benchmarks: the training items, and unseen clips drawn alike.

A model at chance on the benchmark can fail in three different places, and these splits tell them apart:
chance on the items stage 3 trained on is an optimisation failure; high there but chance on new clips
drawn exactly like them is memorisation; high on those but chance on the benchmark is a mismatch between
the training world and the benchmark (its frame folders, durations, prompts).

- ``train``: the multiple-choice items of ``annotations/instruction_video_mc.json``, as they were trained
  on, grouped by task; the media are the training clips themselves (``video`` links to ``<root>/videos``).
- ``heldout``: ``test_per_task`` new clips per task from their own seed stream, sampled, rendered and asked
  about exactly like the training clips (mp4 at the training frame rates, the training question seed).

Each is written once, on first use, to ``<root>/splits/<split>/`` (``tasks.json``, ``json/``, ``video/``)
through a temporary sibling renamed into place, so concurrent or interrupted preparations never leave a
half-written split; a split whose ``tasks.json`` exists is complete and reused.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

from videochat2.data import qa_generation as qa
from videochat2.embedded.annotations import _record, _tasks_json
from videochat2.embedded.build import _read_manifest, _render_all, _sibling, _write_json
from videochat2.embedded.jobs import Job, _seed
from videochat2.embedded.tasks import TASKS

SPLITS = ("train", "heldout")


def _training_items(root: Path) -> dict[str, list[dict]]:
    """The trained multiple-choice items by task; a clip's task is read from the world's ground truth."""
    events = json.loads((root / "annotations" / "events.json").read_text())
    task_of = {e["path"].removeprefix("videos/"): e["task"] for e in events}
    items = json.loads((root / "annotations" / "instruction_video_mc.json").read_text())
    by_task: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        by_task[task_of[item["video"]]].append(item)
    return {task: by_task[task] for task in TASKS}


def _heldout_jobs(settings: dict, out: Path) -> list[Job]:
    """Training-like clips (mp4 at the training frame rates) from a seed stream no other split uses."""
    names = list(TASKS)
    jobs = []
    for i in range(settings["test_per_task"] * len(names)):
        task = names[i % len(names)]
        seed = _seed(settings["seed"], "heldout", task, i)
        jobs.append(Job(task, seed, i // len(names), f"video/{task}_{i:05d}.mp4", False, str(out), settings["size"]))
    return jobs


def _heldout_items(settings: dict, out: Path, workers: int) -> dict[str, list[dict]]:
    anns = _render_all(_heldout_jobs(settings, out), workers)
    return {
        task: qa.build_items(
            [_record(a, "video/") for a in anns if a["task"] == task],
            spec.qa_task(task),
            seed=settings["seed"],
            source=f"heldout {task}",
        )[0]
        for task, spec in TASKS.items()
    }


def _layout() -> dict:
    """tasks.json of a split: the benchmark's tasks, every clip an mp4 straight under ``video/``."""
    return {name: {**task, "prefix": "", "media_type": "video"} for name, task in _tasks_json().items()}


def prepare_split(root: str | os.PathLike, split: str, *, workers: int | None = None) -> Path:
    """The split's MVBench-format root under ``<root>/splits/``, written on first use (see module docstring)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    root = Path(root).resolve()
    manifest = _read_manifest(root)
    if manifest is None:
        raise FileNotFoundError(f"{root} holds no embedded world (no MANIFEST.json); build it first")
    target = root / "splits" / split
    if (target / "tasks.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = _sibling(target, "building")
    fresh.mkdir()
    try:
        if split == "train":
            (fresh / "video").symlink_to(Path("..", "..", "videos"), target_is_directory=True)
            items = _training_items(root)
        else:
            items = _heldout_items(manifest["settings"], fresh, workers or os.cpu_count() or 1)
        for task, task_items in items.items():
            _write_json(fresh / "json" / f"{task}.json", task_items)
        _write_json(fresh / "tasks.json", _layout())
        try:
            fresh.rename(target)
        except OSError:  # another process finished the same split first
            if not (target / "tasks.json").is_file():
                raise
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return target
