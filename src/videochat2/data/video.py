"""Media readers: a file -> uint8 frames [T, H, W, 3] at sampled indices.

Indices are chosen first and only those frames are decoded. decord is the default (one thread per
reader, opened inside the worker, since readers shared across processes deadlock); where it is not
installed (it has wheels for Linux x86_64 and Windows AMD64 only) the PyAV reader reads instead. The PyAV reader
returns the same pixels faster: it decodes each group of targets from its keyframe and skips the
non-reference frames no target depends on (see `_decode_sparse`). Frame folders (`00001.jpg`, ...) and
GIFs are read with PIL. Every failure is a `MediaReadError` naming the file, so the data pipeline can count
and replace the sample.
Video files, gifs and images may also be given as binary file objects (media read from shards).
"""

from __future__ import annotations

import bisect
import functools
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from videochat2.data.frame_indices import (
    clip_bounds,
    fps_indices,
    keyframe_segment_indices,
    official_mvbench_indices,
    parse_sample,
    segment_indices,
)

logger = logging.getLogger(__name__)

FRAME_FOLDER_FPS = 3.0
GIF_FPS = 25.0
# The official MVBench evaluator's index rule (frame_indices.official_mvbench_indices).
MVBENCH_SAMPLE = "mvbench"
# A file on disk, or its bytes as a binary file object.
Media = str | Path | BinaryIO


class MediaReadError(RuntimeError):
    """A media file that is missing, empty, corrupt or undecodable."""


@dataclass(frozen=True)
class FrameSampling:
    """How many frames to take and how: `rand` | `middle` | `rand_keyframe` | `fps<X>` | `mvbench`."""

    num_frames: int
    sample: str = "middle"
    max_num_frames: int = -1

    def __post_init__(self) -> None:
        if self.sample != MVBENCH_SAMPLE:
            parse_sample(self.sample)

    @property
    def wants_keyframes(self) -> bool:
        """Whether `indices` uses keyframe positions (readers only look them up when it does)."""
        return self.sample == "rand_keyframe"

    def indices(
        self,
        vlen: int,
        fps: float,
        rng: random.Random | None = None,
        bound: tuple[float, float] | None = None,
        first_idx: int = 0,
        keyframes: list[int] | None = None,
    ) -> list[int]:
        """0-based indices into the whole video; a `bound` (seconds) restricts them to that window.

        `first_idx` only matters for the `mvbench` rule, which numbers frame folders from 1 (and so
        rounds their bounds differently); the result is shifted back to 0-based positions.
        `keyframes` (0-based) only matters for `rand_keyframe`; without them (frame folders, gifs:
        every frame is cheap) it samples like `rand`.
        """
        if self.sample == MVBENCH_SAMPLE:
            official = official_mvbench_indices(self.num_frames, fps, vlen - 1 + first_idx, first_idx, bound)
            return [min(max(i - first_idx, 0), vlen - 1) for i in official]
        offset, length = clip_bounds(bound[0], bound[1], fps, vlen) if bound else (0, vlen)
        spec = parse_sample(self.sample)
        if spec.kind == "fps":
            local = fps_indices(length, fps, spec.fps, self.max_num_frames) or [0]
        elif spec.kind == "rand_keyframe" and keyframes is not None:
            local_keys = [k - offset for k in keyframes if offset <= k < offset + length]
            local = keyframe_segment_indices(self.num_frames, length, local_keys, rng)
        elif spec.kind == "rand_keyframe":
            local = segment_indices(self.num_frames, length, "rand", rng)
        else:
            local = segment_indices(self.num_frames, length, spec.kind, rng)
        return [offset + i for i in local]


def read_video(
    path: Media,
    sampling: FrameSampling,
    rng: random.Random | None = None,
    bound: tuple[float, float] | None = None,
    backend: str = "decord",
    times: list[float] | None = None,
) -> torch.Tensor:
    """Decode the sampled frames of a video file with decord or PyAV (their times appended to `times`).

    `decord` falls back to PyAV where decord is not installed: both give the same pixels, so a corpus
    configured for decord still reads on machines decord has no wheels for.
    """
    path = _existing(path)
    if backend == "decord" and decord_available():
        return _read_decord(path, sampling, rng, bound, times)
    if backend in ("decord", "av"):
        return _read_av(path, sampling, rng, bound, times)
    raise ValueError(f"video backend must be 'decord' or 'av', got {backend!r}")


@functools.cache
def decord_available() -> bool:
    """Whether decord imports; logged once per process when it does not, since PyAV then reads its videos."""
    try:
        import decord  # noqa: F401
    except ImportError:
        logger.warning("decord is not installed: videos are read with PyAV (the same frames)")
        return False
    return True


def _existing(path: Media) -> Path | BinaryIO:
    if not isinstance(path, (str, Path)):
        return path
    path = Path(path)
    if not path.exists():
        raise MediaReadError(f"{path}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise MediaReadError(f"{path}: empty file")
    return path


def _source(path: Path | BinaryIO) -> str | BinaryIO:
    return str(path) if isinstance(path, Path) else path


def _record_times(times: list[float] | None, indices: list[int], fps: float) -> None:
    """Append each sampled frame's time in seconds (index / fps), which the original's time message reads."""
    if times is not None:
        times.extend(index / fps for index in indices)


def _read_decord(path: Path, sampling: FrameSampling, rng, bound, times=None) -> torch.Tensor:
    import decord

    try:
        reader = decord.VideoReader(_source(path), num_threads=1)
        vlen, fps = len(reader), float(reader.get_avg_fps())
        if vlen < 1:
            raise MediaReadError(f"{path}: no decodable frames")
        keyframes = list(reader.get_key_indices()) if sampling.wants_keyframes else None
        indices = [min(i, vlen - 1) for i in sampling.indices(vlen, fps, rng, bound, keyframes=keyframes)]
        frames = reader.get_batch(indices).asnumpy()
        _record_times(times, indices, fps)
    except MediaReadError:
        raise
    except Exception as err:  # decord raises its own error types from C++
        raise MediaReadError(f"{path}: decord failed: {err}".splitlines()[0]) from None
    return torch.from_numpy(np.ascontiguousarray(frames))


def _read_av(path: Path | BinaryIO, sampling: FrameSampling, rng, bound, times=None) -> torch.Tensor:
    import av

    try:
        with av.open(_source(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            fps = float(stream.average_rate or 25)
            index = _packet_index(container, stream)
            if index is not None:
                pts, keyframes = index
                key_indices = [bisect.bisect_left(pts, k) for k in keyframes]
                indices = [
                    min(i, len(pts) - 1) for i in sampling.indices(len(pts), fps, rng, bound, keyframes=key_indices)
                ]
                frames = _decode_sparse(container, stream, keyframes or pts[:1], [pts[i] for i in indices])
        if index is None:  # no timestamps to seek by: decode everything, in order
            return _read_av_sequential(path, sampling, rng, bound, fps, times)
    except MediaReadError:
        raise
    except Exception as err:
        raise MediaReadError(f"{path}: PyAV failed: {err}".splitlines()[0]) from None
    missing = [i for i in indices if pts[i] not in frames]
    if missing:
        raise MediaReadError(f"{path}: frames {missing[:4]} could not be decoded")
    _record_times(times, indices, fps)
    return torch.from_numpy(np.stack([frames[pts[i]] for i in indices]))


def _read_av_sequential(
    path: Path | BinaryIO, sampling: FrameSampling, rng, bound, fps: float, times=None
) -> torch.Tensor:
    import av

    if not isinstance(path, Path):
        path.seek(0)
    with av.open(_source(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise MediaReadError(f"{path}: no decodable frames")
    indices = [min(i, len(frames) - 1) for i in sampling.indices(len(frames), fps, rng, bound)]
    _record_times(times, indices, fps)
    return torch.from_numpy(np.stack([frames[i] for i in indices]))


def _packet_index(container, stream) -> tuple[list[int], list[int]] | None:
    """Presentation times of all frames (display order) and of the keyframes, by demuxing only.

    None when some packet has no timestamp (raw streams, some AVIs): then nothing can be sought.
    """
    packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]
    if not packets:
        raise MediaReadError("no video packets")
    if any(t is None for t, _ in packets):
        return None
    return sorted(t for t, _ in packets), sorted(t for t, key in packets if key)


def _decode_sparse(container, stream, keyframes: list[int], targets: list[int]) -> dict[int, np.ndarray]:
    """RGB frames at presentation times `targets`, decoding as few packets as possible.

    Targets are grouped by the keyframe they depend on; each group is decoded from that keyframe,
    and packets of non-reference frames that are not targets are dropped by the decoder (nothing
    depends on them, so the pixels are those of a full decode). Once every target of a group has
    been sent, the decoder is drained instead of fed further packets.
    """
    groups: dict[int, set[int]] = {}
    for t in sorted(set(targets)):
        groups.setdefault(keyframes[max(bisect.bisect_right(keyframes, t) - 1, 0)], set()).add(t)
    frames: dict[int, np.ndarray] = {}
    for keyframe, group in groups.items():
        frames.update(_decode_group(container, stream, keyframe, group))
    return frames


def _decode_group(container, stream, keyframe: int, group: set[int]) -> dict[int, np.ndarray]:
    codec = stream.codec_context
    container.seek(keyframe, stream=stream, backward=True)
    codec.flush_buffers()
    unsent, found = set(group), {}
    for packet in container.demux(stream):
        codec.skip_frame = "DEFAULT" if packet.pts in unsent else "NONREF"
        unsent.discard(packet.pts)
        decoded = list(codec.decode(packet))
        if not unsent:
            decoded += codec.decode(None)
        found.update((f.pts, f.to_ndarray(format="rgb24")) for f in decoded if f.pts in group)
        if not unsent or len(found) == len(group):
            break
    return found


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def read_frame_folder(
    path: str | Path,
    sampling: FrameSampling,
    rng: random.Random | None = None,
    bound=None,
    fps: float = FRAME_FOLDER_FPS,
    times: list[float] | None = None,
) -> torch.Tensor:
    """A folder of JPEG frames (`00001.jpg`, ...) taken at `fps`; frame k is file number k + 1."""
    path = Path(path)
    files = sorted(path.glob("*.jpg")) if path.is_dir() else []
    if not files:
        raise MediaReadError(f"{path}: no frames (expected a folder of 00001.jpg, ...)")
    indices = [min(i, len(files) - 1) for i in sampling.indices(len(files), fps, rng, bound, first_idx=1)]
    _record_times(times, indices, fps)
    try:
        return torch.from_numpy(np.stack([_rgb(Image.open(files[i])) for i in indices]))
    except OSError as err:
        raise MediaReadError(f"{path}: unreadable frame: {err}") from None


def read_gif(
    path: Media,
    sampling: FrameSampling,
    rng: random.Random | None = None,
    bound=None,
    fps: float = GIF_FPS,
    times: list[float] | None = None,
) -> torch.Tensor:
    """An animated GIF, assumed to run at 25 fps as in the original."""
    path = _existing(path)
    try:
        with Image.open(path) as gif:
            frames = []
            for i in range(getattr(gif, "n_frames", 1)):
                gif.seek(i)
                frames.append(_rgb(gif))
    except OSError as err:
        raise MediaReadError(f"{path}: unreadable gif: {err}") from None
    indices = sampling.indices(len(frames), fps, rng, bound)
    _record_times(times, indices, fps)
    return torch.from_numpy(np.stack([frames[i] for i in indices]))


def read_image(path: Media) -> torch.Tensor:
    """A still image as a one-frame clip [1, H, W, 3]."""
    path = _existing(path)
    try:
        with Image.open(path) as image:
            return torch.from_numpy(_rgb(image).copy()).unsqueeze(0)
    except OSError as err:
        raise MediaReadError(f"{path}: unreadable image: {err}") from None


def read_media(
    path: Media,
    media_type: str,
    sampling: FrameSampling,
    rng: random.Random | None = None,
    bound: tuple[float, float] | None = None,
    backend: str = "decord",
    times: list[float] | None = None,
) -> torch.Tensor:
    """Dispatch on media type: video | frame | gif | image. The sampled frames' times in seconds are
    appended to `times` when given (a still image has none). A video entry whose file is a `.gif` (the TGIF
    corpora of the instruction data) is read as a GIF at 25 fps, as the original's video loader does."""
    if media_type == "video" and isinstance(path, (str, Path)) and str(path).lower().endswith(".gif"):
        return read_gif(path, sampling, rng, bound, times=times)
    if media_type == "video":
        return read_video(path, sampling, rng, bound, backend, times)
    if media_type == "frame":
        return read_frame_folder(path, sampling, rng, bound, times=times)
    if media_type == "gif":
        return read_gif(path, sampling, rng, bound, times=times)
    if media_type == "image":
        return read_image(path)
    raise ValueError(f"media_type must be video, frame, gif or image, got {media_type!r}")
