"""Bad media never crash a run: each kind is replaced, counted and listed; a hang is cut off; too many stop it."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import ramp_frames, run_script, train_overrides, write_video
from videochat2.data.formats import MediaRecord
from videochat2.data.media_dataset import MediaDataset
from videochat2.data.transforms import FrameTransform
from videochat2.data.video import FrameSampling, read_media


def break_file(path: Path, kind: str) -> None:
    """Damage a media file the ways real corpora are damaged."""
    if kind == "missing":
        path.unlink()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif kind == "corrupt":
        data = bytearray(path.read_bytes())
        data[: len(data) // 2] = bytes(len(data) // 2)
        path.write_bytes(bytes(data))
    elif kind == "unreadable":  # a directory where a file should be (permissions do not stop root)
        path.unlink()
        path.mkdir()


KINDS = ("missing", "empty", "truncated", "corrupt", "unreadable")


@pytest.mark.parametrize("reader", ["decord", "av"])
def test_each_kind_of_bad_file_is_replaced_and_reported(tmp_path, reader):
    good = write_video(tmp_path / "good.mp4", ramp_frames(20))
    records = [MediaRecord(str(good), "video", "good", reader=reader)] * 20  # replacements are drawn at random
    for kind in KINDS:
        path = shutil.copy(good, tmp_path / f"{kind}.mp4")
        break_file(Path(path), kind)
        records.append(MediaRecord(str(path), "video", kind, reader=reader))
    dataset = MediaDataset(records, FrameSampling(4, "middle"), FrameTransform(16, "test"))
    for index, kind in enumerate(KINDS, start=20):
        sample = dataset[index]
        assert sample["record"].caption == "good" and sample["pixel_values"].shape == (4, 3, 16, 16)
        assert sample["skipped"] and all(line.startswith(str(tmp_path)) for line in sample["skipped"])
        assert sample["skipped"][0].startswith(f"{tmp_path / kind}.mp4: ")


@pytest.mark.slow  # waits out the read timeout
def test_a_hanging_read_is_cut_off_and_counted(tmp_path, ramp_video):
    def read(path, *args):
        if "hangs" in path:
            time.sleep(30)
        return read_media(path, *args)

    records = [MediaRecord(str(tmp_path / "hangs.mp4"), "video", "slow"), MediaRecord(str(ramp_video), "video", "ok")]
    # 2 s leaves the good file's real decode room on a loaded machine; the hanging one would take 30 s
    dataset = MediaDataset(records, FrameSampling(2), FrameTransform(16, "test"), read_timeout_s=2.0, read=read)
    start = time.perf_counter()
    sample = dataset[0]
    assert sample["record"].caption == "ok"
    # the replacement is drawn at random, so the hanging file may come up more than once
    assert set(sample["skipped"]) == {f"{tmp_path / 'hangs.mp4'}: read timed out after 2 s"}
    assert time.perf_counter() - start < 2.0 * len(sample["skipped"]) + 5


def test_reader_errors_pass_through_the_deadline_thread(tmp_path):
    records = [MediaRecord(str(tmp_path / "gone.mp4"), "video", "a")] * 3
    dataset = MediaDataset(records, FrameSampling(2), FrameTransform(16, "test"), max_retries=3, read_timeout_s=5)
    with pytest.raises(RuntimeError, match=r"3 unreadable samples in a row; last: .*gone.mp4: file not found"):
        dataset[0]


@pytest.fixture(scope="module")
def broken_copy(dirs, tmp_path_factory) -> tuple[Path, list[str]]:
    """A copy of the small synthetic set with three training videos broken (empty, truncated, deleted)."""
    root = tmp_path_factory.mktemp("broken") / "synthetic"
    shutil.copytree(dirs["data"] / "synthetic", root)
    records = json.loads((root / "annotations" / "pretrain_video.json").read_text())
    broken = [str(root / "videos" / r["video"]) for r in records[:3]]
    for path, kind in zip(broken, ("empty", "truncated", "missing")):
        break_file(Path(path), kind)
    return root, broken


def bad_media_run(dirs, root: Path, run: str, *extra: str, check: bool = True):
    overrides = [
        *train_overrides(dirs, run=run, steps=40),
        f"data.root={root}",
        "trainer.limit_val_batches=0",
        "data.num_frames=2",
        "data.image_size=32",
        *extra,
    ]
    return run_script("train.py", *overrides, check=check)


@pytest.mark.slow
def test_training_on_a_set_with_broken_videos_completes_and_reports_them(dirs, broken_copy):
    root, broken = broken_copy
    bad_media_run(dirs, root, "bad", "data.max_skip_fraction=0.5", "data.batch_size=2")
    run_dir = dirs["out"] / "bad" / "stage1"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 40
    listed = (run_dir / "skipped_media.txt").read_text().splitlines()
    assert summary["skipped_media"] == len(listed) > 0
    assert {line.split(": ")[0] for line in listed} <= set(broken)
    assert any("empty file" in line for line in listed) or any("file not found" in line for line in listed)
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    logged = [float(r["data/skipped"]) for r in rows if r.get("data/skipped")]
    assert logged and max(logged) == len(listed)


@pytest.mark.slow
def test_too_many_broken_videos_stop_training_with_the_files_named(dirs, broken_copy):
    root, broken = broken_copy
    result = bad_media_run(dirs, root, "bad_limit", "data.max_skip_fraction=0.001", "data.batch_size=16", check=False)
    assert result.returncode != 0
    assert "above data.max_skip_fraction=0.001); first bad files:" in result.stderr
    assert any(path in result.stderr for path in broken)
    assert not (dirs["out"] / "bad_limit" / "stage1" / "summary.json").exists()
