"""Streaming shards: the converter, the round trip against the file-based path, the rank/worker split."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tests.conftest import REPO, ramp_frames, run_script, train_overrides, write_video
from videochat2.data.formats import load_records
from videochat2.data.media_dataset import MediaDataset
from videochat2.data.shards import ShardStream, expand_shards, main, parse_size, split_for
from videochat2.data.transforms import FrameTransform
from videochat2.data.video import FrameSampling

SAMPLING = FrameSampling(4, "middle")
TRANSFORM = FrameTransform(16, "test")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Six short videos (one of them clipped by start/end), one missing; annotation in instruction format."""
    root = tmp_path_factory.mktemp("corpus")
    items = []
    for i in range(6):
        frames = ramp_frames(24)
        frames[..., i % 3] = 255 - frames[..., i % 3]  # every clip distinguishable
        write_video(root / "media" / f"clip{i}.mp4", frames)
        item = {"video": f"clip{i}.mp4", "QA": [{"i": "", "q": f"q{i}", "a": f"a{i}"}]}
        if i == 2:
            item.update(start=0.5, end=1.5)
        items.append(item)
    items.append({"video": "missing.mp4", "QA": [{"q": "q", "a": "a"}]})
    annotation = root / "instruction.json"
    annotation.write_text(json.dumps(items))
    out = root / "shards"
    main(
        [
            "--annotation",
            str(annotation),
            "--media-root",
            str(root / "media"),
            "--media-type",
            "video",
            "--format",
            "videochat2_instruction",
            "--out",
            str(out),
            "--shard-size",
            "12KB",
        ]
    )
    records = load_records(annotation, root / "media", "video", format="videochat2_instruction")
    return {"root": root, "out": out, "records": records}


def _stream_samples(shards, **kwargs) -> list[dict]:
    stream = ShardStream(shards, SAMPLING, TRANSFORM, batch_size=1, **kwargs)
    return [batch[0] for batch in stream]


def test_converter_writes_several_shards_and_lists_missing_media(corpus):
    index = json.loads((corpus["out"] / "shards.json").read_text())
    assert index["samples"] == 6 and index["skipped"] == 1 and len(index["shards"]) >= 2
    assert "missing.mp4" in (corpus["out"] / "skipped.txt").read_text()
    with tarfile.open(corpus["out"] / "shard-000000.tar") as tar:  # the WebDataset layout: <key>.<ext>
        names = tar.getnames()
    assert names[:2] == ["000000000.mp4", "000000000.json"]


def test_shard_round_trip_gives_the_json_paths_samples(corpus):
    file_based = MediaDataset(corpus["records"], SAMPLING, TRANSFORM)
    by_path = {file_based[i]["record"].path: file_based[i] for i in range(6)}
    streamed = _stream_samples(expand_shards(corpus["out"]))
    assert [s["record"] for s in streamed] == corpus["records"][:6]
    for sample in streamed:
        expected = by_path[sample["record"].path]
        assert torch.equal(sample["pixel_values"], expected["pixel_values"])
    clipped = streamed[2]["record"]
    assert (clipped.start, clipped.end) == (0.5, 1.5)


def test_streamed_samples_carry_frame_times_like_file_based_ones(corpus):
    timed = MediaDataset(corpus["records"], SAMPLING, TRANSFORM, frame_times=True)
    by_path = {timed[i]["record"].path: timed[i]["seconds"] for i in range(6)}
    streamed = _stream_samples(expand_shards(corpus["out"]), frame_times=True)
    assert all(s["seconds"] and s["seconds"] == by_path[s["record"].path] for s in streamed)
    assert all(s["seconds"] is None for s in _stream_samples(expand_shards(corpus["out"])))


def test_split_by_rank_and_worker_is_disjoint_and_complete(corpus):
    shards = [f"s{i}" for i in range(11)]
    parts = [split_for(shards, r, 2, w, 3) for r in range(2) for w in range(3)]
    assert sorted(s for part in parts for s in part) == sorted(shards)
    shards = expand_shards(corpus["out"])
    seen = []
    for rank in range(2):  # shuffled shard order (one per epoch, shared by the ranks) and sample order
        stream = ShardStream(shards, SAMPLING, TRANSFORM, batch_size=1, rank=rank, world_size=2, shuffle=True)
        loader = DataLoader(stream, batch_size=None, num_workers=2, collate_fn=lambda b: b)
        seen += [batch[0]["record"].path for batch in loader]
    assert sorted(seen) == sorted(r.path for r in corpus["records"][:6])
    orders = {
        tuple(b[0]["record"].path for b in ShardStream(shards, SAMPLING, TRANSFORM, 1, seed=s, shuffle=True))
        for s in range(4)
    }
    assert len(orders) > 1 and all(sorted(o) == sorted(seen) for o in orders)


def test_resampled_stream_has_a_fixed_epoch_on_every_rank(corpus):
    shards = expand_shards(corpus["out"])
    lengths = []
    for rank in range(2):
        stream = ShardStream(
            shards, SAMPLING, TRANSFORM, batch_size=2, rank=rank, world_size=2, resampled=True, epoch_batches=5, seed=3
        )
        loader = DataLoader(stream, batch_size=None, num_workers=2, collate_fn=lambda b: b)
        batches = list(loader)
        lengths.append(len(batches))
        assert all(len(b) == 2 for b in batches) and len(loader) == 5
    assert lengths == [5, 5]
    stream = ShardStream(shards, SAMPLING, TRANSFORM, batch_size=1, resampled=True, epoch_batches=8, seed=3)
    first, second = ([b[0]["record"].path for b in stream] for _ in range(2))
    assert first != second  # a new epoch draws a new shard order


def test_broken_media_in_a_shard_is_skipped_and_reported(tmp_path, corpus):
    shard = tmp_path / "bad.tar"
    with tarfile.open(shard, "w") as tar, tarfile.open(corpus["out"] / "shard-000000.tar") as good:
        for info in good.getmembers():
            data = good.extractfile(info).read()
            if info.name == "000000000.mp4":
                data = data[: len(data) // 3]  # truncated
            if info.name == "000000001.json":
                continue  # a sample without its record
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    samples = _stream_samples([str(shard), str(corpus["out"] / "shard-000001.tar")])
    reports = [msg for s in samples for msg in s["skipped"]]
    assert len(reports) == 2 and "clip0.mp4" in reports[0] and "000000000" in reports[0]
    assert "000000001" in reports[1] and "one .json" in reports[1]


def test_a_truncated_or_non_tar_shard_is_a_counted_bad_sample_naming_it(tmp_path, corpus):
    """Finding 8: a broken shard killed training without naming it."""
    good = (corpus["out"] / "shard-000000.tar").read_bytes()
    truncated, not_tar = tmp_path / "truncated.tar", tmp_path / "not_a.tar"
    truncated.write_bytes(good[: len(good) // 2 + 100])
    not_tar.write_bytes(b"this is not a tar archive" * 40)
    samples = _stream_samples([str(truncated), str(not_tar), str(corpus["out"] / "shard-000001.tar")])
    reports = [msg for s in samples for msg in s["skipped"]]
    assert any("truncated.tar" in r and "unreadable shard" in r for r in reports)
    assert any("not_a.tar" in r and "unreadable shard" in r for r in reports)
    assert samples  # the good shard is still read


def pack(annotation, media_root, out, *extra: str) -> None:
    main(["--annotation", str(annotation), "--media-root", str(media_root), "--media-type", "video", "--format",
          "videochat2_instruction", "--out", str(out), "--shard-size", "12KB", *extra])  # fmt: skip


def test_packing_into_a_directory_with_shards_refuses_or_replaces_them(tmp_path, corpus):
    """Finding 8: re-packing left the old shards, and training read them too."""
    out = tmp_path / "shards"
    annotation = corpus["root"] / "instruction.json"
    pack(annotation, corpus["root"] / "media", out)
    (out / "shard-000099.tar").write_bytes((out / "shard-000000.tar").read_bytes())  # an older packing's
    with pytest.raises(SystemExit, match="already holds shards.*--overwrite"):
        pack(annotation, corpus["root"] / "media", out)
    pack(annotation, corpus["root"] / "media", out, "--overwrite")
    assert not (out / "shard-000099.tar").exists()


def test_a_shard_directory_is_read_through_its_index_not_a_glob(tmp_path, corpus):
    out = tmp_path / "shards"
    pack(corpus["root"] / "instruction.json", corpus["root"] / "media", out)
    listed = expand_shards(out)
    (out / "zz-stray.tar").write_bytes((out / "shard-000000.tar").read_bytes())
    assert expand_shards(out) == listed
    assert len(_stream_samples(expand_shards(out))) == json.loads((out / "shards.json").read_text())["samples"]
    (out / "shard-000000.tar").unlink()
    with pytest.raises(FileNotFoundError, match="shard-000000.tar"):
        expand_shards(out)


def test_image_shards_and_size_and_pattern_parsing(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 60 * i, np.uint8)).save(tmp_path / f"im{i}.jpg")
    annotation = tmp_path / "images.json"
    annotation.write_text(json.dumps([{"image": f"im{i}.jpg", "caption": f"c{i}"} for i in range(3)]))
    main(
        [
            "--annotation",
            str(annotation),
            "--media-root",
            str(tmp_path),
            "--media-type",
            "image",
            "--out",
            str(tmp_path / "out"),
            "--shard-size",
            "1KB",
        ]
    )
    shards = expand_shards(str(tmp_path / "out" / "shard-{000000..000002}.tar"))
    assert shards == expand_shards(tmp_path / "out")
    samples = _stream_samples(shards)
    assert [s["record"].caption for s in samples] == ["c0", "c1", "c2"] and samples[0]["media_type"] == "image"
    assert parse_size("256MB") == 256_000_000 and parse_size("1.5GB") == 1_500_000_000 and parse_size(4096) == 4096
    with pytest.raises(ValueError, match="shard size"):
        parse_size("lots")


@pytest.mark.slow
def test_train_reads_shards_when_streaming_is_configured(dirs, tmp_path):
    """`python -m videochat2.data.shards` on the set's video captions, then stage 1 streams from them."""
    root = dirs["data"] / "synthetic"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "videochat2.data.shards",
            "--annotation",
            str(root / "annotations/pretrain_video.json"),
            "--media-root",
            str(root / "videos"),
            "--media-type",
            "video",
            "--out",
            str(tmp_path / "shards"),
            "--shard-size",
            "100KB",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(expand_shards(tmp_path / "shards")) >= 2
    run_script(
        "train.py",
        *train_overrides(dirs, run="streamed", steps=3),
        f"data.streaming.shards={tmp_path / 'shards'}",
        "data.streaming.epoch_samples=12",
        "data.sample=rand_keyframe",
    )
    summary = json.loads((dirs["out"] / "streamed" / "stage1" / "summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 3 and summary["skipped_media"] == 0
