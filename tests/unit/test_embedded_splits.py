"""The embedded world's train and held-out splits: benchmarks of the trained items and of unseen look-alikes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import pytest

from recipes.evaluate import benchmark_root, output_dir, validate
from tests.unit.test_configs import compose_train
from videochat2.embedded.build import build
from videochat2.embedded.splits import prepare_split
from videochat2.embedded.tasks import TASKS
from videochat2.eval.mvbench import load_questions

TINY = dict(seed=5, train_videos=18, images=2, test_per_task=2, retrieval_videos=2, size=64)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("world") / "synthetic", workers=1, **TINY)


def digests(paths) -> set[str]:
    return {hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def test_train_split_asks_exactly_the_trained_items(root):
    questions = load_questions(prepare_split(root, "train"))
    trained = json.loads((root / "annotations" / "instruction_video_mc.json").read_text())
    by_video = {item["video"]: item for item in trained}
    assert len(questions) == len(trained) == TINY["train_videos"]
    events = {e["path"]: e["task"] for e in json.loads((root / "annotations" / "events.json").read_text())}
    for q in questions:
        relative = q.video.relative_to(root / "splits" / "train" / "video").as_posix()
        item = by_video[relative]
        assert (q.question, list(q.candidates), q.answer) == (item["question"], item["candidates"], item["answer"])
        assert events[f"videos/{relative}"] == q.task
        assert q.video.resolve() == (root / "videos" / relative).resolve() and q.video.is_file()


def test_heldout_split_is_new_clips_drawn_like_the_training_ones(root):
    questions = load_questions(prepare_split(root, "heldout", workers=1))
    assert sorted({q.task for q in questions}) == sorted(TASKS)
    assert len(questions) == TINY["test_per_task"] * len(TASKS)
    assert all(q.video.suffix == ".mp4" and q.media_type == "video" for q in questions)
    others = digests(p for p in root.rglob("*.mp4") if "splits" not in p.parts)
    assert not digests(q.video for q in questions) & others
    for task in TASKS:  # balanced like training: a task's clips do not share one answer
        assert len({q.answer for q in questions if q.task == task}) == TINY["test_per_task"]
    with av.open(str(questions[0].video)) as container:
        assert sum(1 for _ in container.decode(video=0)) >= 8


def test_a_prepared_split_is_reused_and_a_half_built_one_is_not_seen(root):
    first = prepare_split(root, "heldout", workers=1)
    stamp = (first / "tasks.json").stat().st_mtime_ns
    (root / "splits" / ".heldout.building-1-dead").mkdir()  # what a killed preparation leaves
    assert prepare_split(root, "heldout", workers=1) == first
    assert (first / "tasks.json").stat().st_mtime_ns == stamp


def test_bad_split_or_root_is_a_clear_error(root, tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        prepare_split(root, "validation")
    with pytest.raises(FileNotFoundError, match="no embedded world"):
        prepare_split(tmp_path, "train")


def compose_eval(overrides: list[str]):
    return compose_train(overrides, config_name="eval")


def test_eval_names_the_split_in_its_folder_and_reads_its_root(root, tmp_path):
    data = [f"paths.data_dir={root.parent}", f"paths.output_root={tmp_path}"]
    cfg = compose_eval(["benchmark.split=train", *data])
    assert output_dir(cfg) == tmp_path / "default" / "eval" / "synthetic-train"
    assert benchmark_root(cfg) == root / "splits" / "train"
    plain = compose_eval(data)
    assert output_dir(plain).name == "synthetic" and benchmark_root(plain) == Path(plain.benchmark.root)
    with pytest.raises(ValueError, match=r"benchmark.split='val': must be one of test, train, heldout"):
        validate(compose_eval(["benchmark.split=val", *data]))
