"""Build the embedded world under a root: every file, in a temporary sibling, cached by its settings.

Building is cached: a root whose manifest records the same settings is reused as is. A root built with
other settings is refused, not replaced: runs trained on it (and the embedded LLM pretrained under it,
`<root>/llm`) depend on its files and tokenizer ids, so other settings go to another root (`data.root=...`),
or replace it explicitly (`replace=True`, `--replace`). A build happens in a temporary sibling folder that
takes the root's place by renames only when complete. Same seed and settings give byte-identical files
(single-threaded x264 with fixed options), so the manifest's checksums are reproducible. Command line::

    python -m videochat2.embedded --out DIR [--seed S] [--train-videos N] [--images N] [--test-per-task N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from videochat2.data import qa_generation as qa
from videochat2.embedded.annotations import _benchmark, _instruction_records, _strip, _tasks_json
from videochat2.embedded.images import _write_images
from videochat2.embedded.jobs import Job, _bench_jobs, _retrieval_jobs, _train_jobs, run_job
from videochat2.embedded.tasks import TASKS
from videochat2.embedded.tokenizers import _corpus, train_tokenizers
from videochat2.embedded.world import GENERATOR_VERSION


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
    parser = argparse.ArgumentParser(prog="python -m videochat2.embedded", description=__doc__.split("\n")[0])
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
