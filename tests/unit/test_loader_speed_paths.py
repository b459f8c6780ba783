"""The fast loading paths give the reference pixels: sparse PyAV decoding, rand_keyframe, uint8 resizing."""

from __future__ import annotations

import io
import random
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from av.video.frame import PictureType
from PIL import Image

from tests.conftest import ramp_frames
from videochat2.data.frame_indices import SampleSpec, keyframe_segment_indices, parse_sample
from videochat2.data.transforms import FrameTransform
from videochat2.data.video import FrameSampling, MediaReadError, read_video

GOP = 15


@pytest.fixture(scope="module")
def bframe_clip(tmp_path_factory) -> Path:
    """6 s at 15 fps, 64x48, a keyframe every 15 frames and B-frames (x264 defaults): moving texture,
    so a frame decoded from the wrong references would not look right."""
    path = tmp_path_factory.mktemp("clips") / "gop.mp4"
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 255, (48, 200, 3)).astype(np.float32)
    scene = (scene + np.roll(scene, 1, 1) + np.roll(scene, 1, 0)) / 3  # some spatial correlation
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt, stream.gop_size = 64, 48, "yuv420p", GOP
        stream.options = {"keyint_min": str(GOP), "sc_threshold": "0", "bframes": "3"}
        for t in range(90):
            frame = scene[:, t : t + 64].astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return path


def test_clip_has_b_frames_and_the_keyframe_interval(bframe_clip):
    decord = pytest.importorskip("decord", reason="decord has no wheels for this platform")
    reader = decord.VideoReader(str(bframe_clip), num_threads=1)
    assert list(reader.get_key_indices()) == list(range(0, 90, GOP))
    with av.open(str(bframe_clip)) as container:
        types = {int(frame.pict_type) for frame in container.decode(video=0)}
    assert int(PictureType.B) in types


@pytest.mark.parametrize("sample", ["rand", "middle", "mvbench", "fps2", "rand_keyframe"])
@pytest.mark.parametrize("bound", [None, (0.7, 3.9)])
def test_av_reader_gives_decords_pixels(bframe_clip, sample, bound):
    # Without decord the decord reader is PyAV itself: nothing to compare.
    pytest.importorskip("decord", reason="decord has no wheels for this platform")
    for num_frames, seed in [(4, 0), (8, 1), (16, 2), (8, 3)]:
        sampling = FrameSampling(num_frames, sample)
        ours = read_video(bframe_clip, sampling, random.Random(seed), bound, backend="av")
        reference = read_video(bframe_clip, sampling, random.Random(seed), bound, backend="decord")
        assert torch.equal(ours, reference), (sample, bound, num_frames, seed)


def test_av_reader_reads_bytes_and_rejects_truncated_files(bframe_clip, tmp_path):
    data = bframe_clip.read_bytes()
    sampling = FrameSampling(8, "middle")
    assert torch.equal(
        read_video(io.BytesIO(data), sampling, backend="av"), read_video(bframe_clip, sampling, backend="av")
    )
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaReadError, match="truncated.mp4"):
        read_video(truncated, sampling, backend="av")


def test_rand_keyframe_takes_one_keyframe_per_segment_when_they_are_dense():
    keyframes = list(range(0, 300, 30))
    seen = set()
    for seed in range(50):
        indices = keyframe_segment_indices(4, 300, keyframes, random.Random(seed))
        assert all(i in keyframes for i in indices)
        assert all(75 * s <= i < 75 * (s + 1) for s, i in enumerate(indices))  # one per segment, in order
        seen.update(indices)
    assert len(seen) == len(keyframes)  # every keyframe of a segment is drawn, not always the same one


def test_rand_keyframe_reach_and_sparse_keyframes():
    for seed in range(20):
        near = keyframe_segment_indices(4, 300, list(range(0, 300, 30)), random.Random(seed), reach=2)
        assert all(i % 30 <= 2 for i in near)
        sparse = keyframe_segment_indices(8, 240, [0, 120], random.Random(seed))
        assert sparse[0] == 0 and sparse[4] == 120  # the segments holding a keyframe take it
        assert all(30 * s <= i < 30 * (s + 1) for s, i in enumerate(sparse))  # the others draw like rand
    assert keyframe_segment_indices(6, 3, [0], random.Random(0)) == [0, 1, 2, 2, 2, 2]  # padded like rand
    assert parse_sample("rand_keyframe") == SampleSpec("rand_keyframe")


def test_rand_keyframe_on_a_video_reads_keyframes(bframe_clip):
    sampling = FrameSampling(6, "rand_keyframe")
    indices = sampling.indices(90, 15.0, random.Random(0), keyframes=list(range(0, 90, GOP)))
    assert indices == list(range(0, 90, GOP))  # six segments of 15 frames, one keyframe each
    clipped = sampling.indices(90, 15.0, random.Random(0), bound=(1.0, 5.0), keyframes=list(range(0, 90, GOP)))
    assert all(15 <= i < 75 for i in clipped) and {15, 30, 45, 60} <= set(clipped)  # the window's keyframes
    assert sampling.indices(90, 15.0, random.Random(0)) == FrameSampling(6, "rand").indices(90, 15.0, random.Random(0))


def test_uint8_resize_matches_pil_bicubic_resize_and_centre_crop():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (23, 40, 3)).astype(np.uint8)
    frames = np.stack([np.asarray(Image.fromarray(small).resize((320, 180), Image.BILINEAR))] * 2)
    ours = FrameTransform(64, "official", normalization="clip")(torch.from_numpy(frames))
    mean, std = (
        torch.tensor(v).view(1, 3, 1, 1)
        for v in [(0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)]
    )
    ours = (ours * std + mean) * 255
    pil = np.array(Image.fromarray(frames[0]).resize((113, 64), Image.BICUBIC))[:, 24:88]
    difference = (ours[0].permute(1, 2, 0) - torch.from_numpy(pil).float()).abs()
    assert ours.shape == (2, 3, 64, 64)
    assert difference.mean() < 0.05 and difference.max() <= 2.5


def test_av_reader_decodes_streams_without_timestamps_in_order(tmp_path):
    """A raw .h264 stream has no packet timestamps to seek by; the reader falls back to decoding all."""
    path = tmp_path / "raw.h264"
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for frame in ramp_frames(40):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    frames = read_video(path, FrameSampling(4, "middle"), backend="av")
    assert np.allclose(frames[:, 0, 0, 0].numpy(), [32, 112, 192, 255], atol=3)  # frames 4, 14, 24, 34
