"""Readers, transforms, annotation parsing and media-type batching."""

from __future__ import annotations

import json
import random
import sys

import pytest
import torch

from tests.conftest import ramp_frames
from videochat2.data.formats import AnnotationError, MediaRecord, load_caption_records
from videochat2.data.media_dataset import MediaDataset
from videochat2.data.mixing import MediaTypeBatchSampler
from videochat2.data.transforms import FrameTransform
from videochat2.data.video import FrameSampling, MediaReadError, read_media


def frame_values(frames: torch.Tensor) -> list[int]:
    return [round(v / 8) for v in frames.float().mean(dim=(1, 2, 3)).tolist()]


@pytest.mark.parametrize("backend", ["decord", "av"])
def test_video_reader_returns_the_sampled_frames(ramp_video, backend):
    frames = read_media(ramp_video, "video", FrameSampling(4, "middle"), backend=backend)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == torch.uint8
    # 30 frames in 4 segments: [0,7) [7,15) [15,22) [22,30) -> middles 3, 10, 18, 25
    assert frame_values(frames) == [3, 10, 18, 25]


@pytest.mark.parametrize("backend", ["decord", "av"])
def test_video_reader_reports_the_sampled_frames_times(ramp_video, backend):
    """The times the original's time message reads: frame index / fps (the ramp runs at 10 fps)."""
    times: list[float] = []
    frames = read_media(ramp_video, "video", FrameSampling(4, "middle"), backend=backend, times=times)
    assert times == pytest.approx([v / 10 for v in frame_values(frames)])


def test_frame_folder_gif_and_image_times(tmp_path, still_image):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    images = [Image.fromarray(frame) for frame in ramp_frames(9)]
    for t, image in enumerate(images):
        image.save(folder / f"{t + 1:05d}.jpg", quality=100)
    images[0].save(tmp_path / "ramp.gif", save_all=True, append_images=images[1:], duration=40)
    folder_times, gif_times, image_times = [], [], []
    read_media(folder, "frame", FrameSampling(3, "middle"), times=folder_times)
    gif = read_media(tmp_path / "ramp.gif", "gif", FrameSampling(3, "middle"), times=gif_times)
    read_media(still_image, "image", FrameSampling(4), times=image_times)
    assert folder_times == pytest.approx([1 / 3, 4 / 3, 7 / 3])  # 3 fps, frames 1, 4, 7
    assert gif.shape[0] == 3 and gif_times == pytest.approx([1 / 25, 4 / 25, 7 / 25])  # 25 fps as the original
    assert image_times == []
    as_video = read_media(tmp_path / "ramp.gif", "video", FrameSampling(3, "middle"))  # TGIF entries are videos
    assert torch.equal(as_video, gif)


def test_dataset_carries_frame_times_only_when_asked(ramp_video):
    records = [MediaRecord(str(ramp_video), "video", "a")]
    plain = MediaDataset(records, FrameSampling(4, "middle"), FrameTransform(16, "test"))
    timed = MediaDataset(records, FrameSampling(4, "middle"), FrameTransform(16, "test"), frame_times=True)
    assert plain[0]["seconds"] is None
    assert timed[0]["seconds"] == pytest.approx([0.3, 1.0, 1.8, 2.5])


def test_video_reader_honours_clip_bounds(ramp_video):
    frames = read_media(ramp_video, "video", FrameSampling(2, "middle"), bound=(1.0, 2.0))
    assert all(10 <= v < 20 for v in frame_values(frames))


def test_frame_folder_and_image(tmp_path, still_image):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(ramp_frames(9)):
        Image.fromarray(frame).save(folder / f"{t + 1:05d}.jpg", quality=100)
    frames = read_media(folder, "frame", FrameSampling(3, "middle"))
    assert frame_values(frames) == [1, 4, 7]
    image = read_media(still_image, "image", FrameSampling(4))
    assert image.shape == (1, 20, 30, 3)


@pytest.mark.parametrize("content", [None, b"", b"not a video at all" * 10])
def test_bad_media_raises_a_named_error(tmp_path, content):
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaReadError, match="bad.mp4"):
        read_media(path, "video", FrameSampling(4))


def test_dataset_replaces_bad_media_and_reports_it(tmp_path, ramp_video):
    records = [MediaRecord(str(tmp_path / "missing.mp4"), "video", "a"), MediaRecord(str(ramp_video), "video", "b")]
    dataset = MediaDataset(records, FrameSampling(4), FrameTransform(16, "test"))
    sample = dataset[0]
    assert sample["record"].caption == "b" and sample["idx"] == 1
    assert len(sample["skipped"]) >= 1 and "missing.mp4" in sample["skipped"][0]


def test_train_transform_is_shared_by_all_frames():
    frames = torch.from_numpy(ramp_frames(3, size=40)).clone()
    frames[:, :, :20] = 255  # left half white in every frame
    out = FrameTransform(24, "train", crop_scale=(0.3, 0.6), hflip=True)(frames, random.Random(0))
    assert out.shape == (3, 3, 24, 24)
    white = out[:, 0] > out[:, 0].mean()
    assert torch.equal(white[0], white[1]) and torch.equal(white[1], white[2])


def test_official_transform_resizes_short_side_and_centre_crops():
    frames = torch.zeros(1, 40, 80, 3, dtype=torch.uint8)
    frames[:, :, 20:60] = 255  # a white centre band that the centre crop keeps entirely
    out = FrameTransform(20, "official", normalization="clip")(frames)
    assert out.shape == (1, 3, 20, 20)
    assert out.min() > 1.5  # all white after normalisation


def test_caption_records_and_their_errors(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"video": "a.mp4", "caption": "x"}]))
    (record,) = load_caption_records(good, tmp_path / "media", "video")
    assert record.path == str(tmp_path / "media" / "a.mp4") and record.caption == "x"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"video": "a.mp4", "caption": "x"}, {"video": "b.mp4"}]))
    with pytest.raises(AnnotationError, match=r"bad.json: record 1 .*caption"):
        load_caption_records(bad, tmp_path, "video")
    with pytest.raises(AnnotationError, match="record 0 has no 'image'"):
        load_caption_records(good, tmp_path, "image")


def test_batches_are_homogeneous_and_ranks_agree_on_the_type_order():
    types = ["video"] * 40 + ["image"] * 24
    ranks = [MediaTypeBatchSampler(types, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    plans = [list(s) for s in ranks]
    assert len(plans[0]) == len(plans[1]) == 8
    for a, b in zip(*plans):
        assert {types[i] for i in a} == {types[i] for i in b} and len({types[i] for i in a}) == 1
        assert not set(a) & set(b)
    assert sorted(i for batch in plans[0] + plans[1] for i in batch) == list(range(64))
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != plans[0]


def test_default_reader_falls_back_to_pyav_without_decord(ramp_video, monkeypatch, caplog):
    """Where decord has no wheels (Linux aarch64, macOS arm64) the default reader still reads every video."""
    from videochat2.data import video

    with_decord = read_media(ramp_video, "video", FrameSampling(4, "middle"))
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now raises ImportError
    video.decord_available.cache_clear()
    try:
        with caplog.at_level("WARNING", logger=video.__name__):
            without = read_media(ramp_video, "video", FrameSampling(4, "middle"))
            read_media(ramp_video, "video", FrameSampling(4, "middle"))
        broken = ramp_video.with_name("broken.mp4")
        broken.write_bytes(ramp_video.read_bytes()[:200])
        with pytest.raises(MediaReadError, match="PyAV failed"):
            read_media(broken, "video", FrameSampling(4, "middle"))
    finally:
        video.decord_available.cache_clear()
    assert without.shape == with_decord.shape == (4, 32, 32, 3)
    assert frame_values(without) == frame_values(with_decord)
    assert [r.message for r in caplog.records].count(
        "decord is not installed: videos are read with PyAV (the same frames)"
    ) == 1
