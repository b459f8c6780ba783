"""Frame-index rules: which frames of a video a clip is built from.

Two families exist and they are not interchangeable (for 300 frames and T=4 the
training "middle" rule gives [37, 112, 187, 262], the MVBench rule
[37, 112, 187, 261]):

- the training rules of the original data pipeline (``rand``, ``middle``,
  ``fps<X>``), optionally inside a ``start``/``end`` clip, plus ``rand_keyframe``,
  a cheaper ``rand`` that prefers frames decodable without decoding others;
- the official MVBench evaluation rule, whose rounding must be reproduced bit for
  bit for the indices (and so the scores) to match the reference evaluator.

Everything here is pure integer/float arithmetic so it can be tested exhaustively
and shared by every reader (video file, frame folder, gif).
"""

from __future__ import annotations

import bisect
import random
import re
from dataclasses import dataclass

import numpy as np

# The official evaluator's stand-in for "no bound": a window wider than any video.
_UNBOUNDED = (-100000.0, 100000.0)


def official_mvbench_indices(
    num_frames: int,
    fps: float,
    max_frame: int,
    first_idx: int = 0,
    bound: tuple[float, float] | None = None,
) -> list[int]:
    """Indices of the official MVBench evaluator (one frame per equal segment).

    ``max_frame`` is ``len(video) - 1`` for video files and the number of files for
    1-indexed frame folders (``first_idx=1``), exactly as the reference passes them.
    Python ``round`` (half to even, like ``np.round``) and ``int`` truncation are
    kept on purpose; duplicates for short clips are allowed and nothing is clamped,
    because that is what the published numbers were computed with.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    start, end = bound if bound is not None else _UNBOUNDED
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_frames
    return [int(start_idx + seg_size / 2 + round(seg_size * i)) for i in range(num_frames)]


def segment_indices(
    num_frames: int,
    vlen: int,
    sample: str = "rand",
    rng: random.Random | None = None,
) -> list[int]:
    """Training-time segment sampling: one frame per equal interval of ``[0, vlen)``.

    ``rand`` draws from ``[a_i, a_{i+1} - 1)`` (the original excludes the upper end)
    and, when an interval is empty, falls back to a sorted random subset of all
    frames, like the original. Short videos are padded with their last index so the
    clip length is always ``num_frames``.
    """
    if num_frames < 1 or vlen < 1:
        raise ValueError(f"need num_frames >= 1 and vlen >= 1, got {num_frames}, {vlen}")
    if sample not in ("rand", "middle"):
        raise ValueError(f"segment sampling is 'rand' or 'middle', got {sample!r}")
    n = min(num_frames, vlen)
    bounds = np.linspace(0, vlen, n + 1).astype(int).tolist()
    ranges = [(lo, nxt - 1) for lo, nxt in zip(bounds[:-1], bounds[1:])]
    if sample == "middle":
        indices = [(lo + hi) // 2 for lo, hi in ranges]
    else:
        indices = _random_in_ranges(ranges, vlen, n, rng or random.Random())
    return indices + [indices[-1]] * (num_frames - n)


def _random_in_ranges(ranges: list[tuple[int, int]], vlen: int, n: int, rng: random.Random) -> list[int]:
    if all(hi > lo for lo, hi in ranges):
        return [rng.randrange(lo, hi) for lo, hi in ranges]
    return sorted(rng.sample(range(vlen), n))


def keyframe_segment_indices(
    num_frames: int,
    vlen: int,
    keyframes: list[int],
    rng: random.Random | None = None,
    reach: int = 0,
) -> list[int]:
    """``rand`` restricted, segment by segment, to frames that are cheap to decode.

    A frame costs the decoding of every reference frame since the previous keyframe,
    so on a 1-s GOP a random frame costs ~15 decodes and a keyframe one. Each segment
    of ``segment_indices`` draws uniformly from its keyframes and the ``reach`` frames
    after each; a segment holding none (keyframes sparser than segments) draws like
    ``rand``. The segment structure (one frame per equal interval, in order) is kept,
    so the clip still spans the video; only the position inside a segment changes.
    """
    if num_frames < 1 or vlen < 1:
        raise ValueError(f"need num_frames >= 1 and vlen >= 1, got {num_frames}, {vlen}")
    rng = rng or random.Random()
    n = min(num_frames, vlen)
    bounds = np.linspace(0, vlen, n + 1).astype(int).tolist()
    cheap = sorted({k + j for k in keyframes for j in range(reach + 1) if 0 <= k + j < vlen})
    indices = []
    for lo, nxt in zip(bounds[:-1], bounds[1:]):
        inside = cheap[bisect.bisect_left(cheap, lo) : bisect.bisect_left(cheap, nxt)]
        if inside:
            indices.append(rng.choice(inside))
        else:
            indices.append(rng.randrange(lo, nxt - 1) if nxt - 1 > lo else lo)
    return indices + [indices[-1]] * (num_frames - n)


def fps_indices(vlen: int, video_fps: float, sample_fps: float, max_num_frames: int = -1) -> list[int]:
    """Frames at a fixed rate: times ``delta/2 + k*delta`` with ``delta = 1/sample_fps``.

    The clip length therefore depends on the video's duration; ``max_num_frames > 0``
    keeps only the first ones, as the original does.
    """
    if vlen < 1 or video_fps <= 0 or sample_fps <= 0:
        raise ValueError(f"need vlen >= 1 and positive fps, got {vlen}, {video_fps}, {sample_fps}")
    duration = vlen / video_fps
    delta = 1.0 / sample_fps
    seconds = np.arange(delta / 2, duration + delta / 2, delta)
    indices = [int(i) for i in np.round(seconds * video_fps) if i < vlen]
    if max_num_frames > 0:
        indices = indices[:max_num_frames]
    return indices


def clip_bounds(start: float, end: float, fps: float, vlen: int) -> tuple[int, int]:
    """``(offset, clip_len)`` of a ``start``/``end`` (seconds) window, as the original.

    The original computes ``clip_len = int((end - start) * fps)`` and
    ``offset = int(start * fps)``; sampled indices are then shifted by ``offset``.
    The result is clipped to the video so a window that runs past the end (or
    starts before 0) still yields decodable frames instead of a read error.
    """
    if end <= start:
        raise ValueError(f"clip end must be after start, got start={start}, end={end}")
    if vlen < 1:
        raise ValueError(f"vlen must be >= 1, got {vlen}")
    offset = min(max(int(start * fps), 0), vlen - 1)
    clip_len = min(int((end - start) * fps), vlen - offset)
    return offset, max(clip_len, 1)


@dataclass(frozen=True)
class SampleSpec:
    """A parsed ``data.sample`` value: ``kind`` is rand | middle | rand_keyframe | fps."""

    kind: str
    fps: float | None = None


_FPS_PATTERN = re.compile(r"fps(\d+(?:\.\d*)?|\.\d+)")


def parse_sample(spec: str) -> SampleSpec:
    """Parse a sampling spec so a typo fails at configuration time, not mid-epoch."""
    if spec in ("rand", "middle", "rand_keyframe"):
        return SampleSpec(spec)
    match = _FPS_PATTERN.fullmatch(spec)
    if match and float(match.group(1)) > 0:
        return SampleSpec("fps", float(match.group(1)))
    raise ValueError(
        f"unknown frame sampling {spec!r}: use 'rand', 'middle', 'rand_keyframe' or 'fps<X>' with X > 0 (e.g. 'fps0.5')"
    )
