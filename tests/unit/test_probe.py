"""The linear probe: splits, what it finds in informative and uninformative features, skips, labelled clips."""

import json

import pytest
import torch

from videochat2.eval.probe.classifier import probe_tasks, split_indices
from videochat2.eval.probe.clips import load_labelled_clips


def test_split_is_seeded_disjoint_and_complete():
    train, test = split_indices(range(20), 0.75, seed=3)
    assert len(train) == 15 and len(test) == 5 and sorted(train + test) == list(range(20))
    assert (train, test) == split_indices(range(20), 0.75, seed=3)
    assert train != split_indices(range(20), 0.75, seed=4)[0]
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_indices(range(4), 1.0, seed=0)


def labelled_features(n: int = 240, classes: int = 3, dim: int = 16):
    """Task `seen`: the answer is a direction in feature space; task `unseen`: features are pure noise."""
    generator = torch.Generator().manual_seed(0)
    labels = [f"answer {i % classes}" for i in range(n)]
    directions = torch.randn(classes, dim, generator=generator) * 2
    informative = torch.stack([directions[i % classes] for i in range(n)]) + torch.randn(n, dim, generator=generator)
    noise = torch.randn(n, dim, generator=generator)
    return torch.cat([informative, noise]), ["seen"] * n + ["unseen"] * n, labels + labels


def test_probe_finds_a_linear_answer_and_not_a_missing_one():
    features, tasks, labels = labelled_features()
    probed = probe_tasks({"tokens": features}, tasks, labels, train_fraction=0.75, seed=0)
    seen, unseen = probed["tasks"]["seen"], probed["tasks"]["unseen"]
    assert seen["classes"] == 3 and seen["n_train"] == 180 and seen["n_test"] == 60
    assert seen["tokens"] >= 90.0
    assert unseen["tokens"] <= 55.0 and unseen["majority"] <= 50.0
    assert probed["macro"]["tokens"] == round((seen["tokens"] + unseen["tokens"]) / 2, 1)
    assert probed["skipped"] == {}


def test_open_answer_sets_and_single_answers_are_skipped_with_a_reason():
    tasks = ["order"] * 10 + ["constant"] * 10 + ["count"] * 10
    labels = [f"order {i}" for i in range(10)] + ["same"] * 10 + [str(i % 2) for i in range(10)]
    probed = probe_tasks({"tokens": torch.randn(30, 4)}, tasks, labels)
    assert set(probed["tasks"]) == {"count"}
    assert probed["skipped"]["order"].startswith("10 distinct answers for 10 clips")
    assert probed["skipped"]["constant"].startswith("1 distinct answers")


def test_labelled_clips_are_filtered_by_prefix_and_keep_their_bounds(tmp_path):
    records = [
        {"path": "videos/train/a.mp4", "task": "count", "label": "once", "bound": [1.0, 2.5]},
        {"path": "videos/train/b.mp4", "task": "count", "label": 2},
        {"path": "videos/test/c.mp4", "task": "count", "label": "once"},
        {"path": "videos/train/frames_d", "task": "count", "label": "once"},
        {"path": "videos/train/e.gif", "task": "count", "label": "once", "media_type": "video"},
    ]
    annotation = tmp_path / "events.json"
    annotation.write_text(json.dumps(records))
    clips = load_labelled_clips(annotation, tmp_path, "videos/train/")
    assert [c.video.name for c in clips] == ["a.mp4", "b.mp4", "frames_d", "e.gif"]
    assert [c.media_type for c in clips] == ["video", "video", "frame", "video"]
    assert clips[0].bound == (1.0, 2.5) and clips[1].bound is None and clips[1].answer == "2"
    assert clips[0].cache_key != clips[1].cache_key
    with pytest.raises(ValueError, match="no labelled clips"):
        load_labelled_clips(annotation, tmp_path, "videos/val/")
    annotation.write_text(json.dumps([{"path": "a.mp4", "task": "count"}]))
    with pytest.raises(ValueError, match=r"lacks \['label'\]"):
        load_labelled_clips(annotation, tmp_path)
