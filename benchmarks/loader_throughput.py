"""Clip-loading throughput: the original's reader and transform against ours, on real-size H.264.

    python benchmarks/loader_throughput.py [--quick] [--clips-dir DIR] [--draws 6]

Generates ~30-s, 30-fps H.264 clips (640x360 and 1280x720; 1-s and 8-s keyframe intervals) whose
content compresses like camera footage (smooth gradients and blocky texture under a camera pan,
moving discs), then loads clips of 8 and 16 frames at 224x224 in one process, one decoder thread:

(a) reference: decord at full resolution (`get_batch`), then per frame a PIL bicubic resize of the
    short side and a centre crop, /255 and normalisation, as the original's evaluation transform;
(b) ours, exact: `read_video(backend="av")` + `FrameTransform("official")` on the same indices;
(c) ours, `data.sample=rand_keyframe`: the same segments, frames cheap to decode.

A profile of one clip says where the time goes first. Rates are clips/s by wall time and by process
CPU time (the CPU-based figure is the one to trust on a shared machine). The last line is a JSON
object: per-configuration rates, `ratio` = (b)/(a) and `ratio_keyframe` = (c)/(a) (CPU time,
summed over configurations; `ratio_keyframe` over the 1-s GOP clips, where keyframes are denser
than segments), and `mad`, the mean absolute difference in grey levels between the (a) and (b) clips.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import decord
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from videochat2.data.frame_indices import segment_indices
from videochat2.data.transforms import NORMALIZATION, FrameTransform
from videochat2.data.video import FrameSampling, read_video

SIZE = 224
NORM = "imagenet"
FPS = 30
GRAIN = 4.0  # grey levels, std of the sensor noise


# ---------------------------------------------------------------- clips


def _texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A scene wider and taller than the frame: sums of smooth waves plus 8-px blocky texture."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = np.full((height, width, 3), 110.0, np.float32)
    for channel in range(3):
        for _ in range(6):
            fx, fy = rng.uniform(0.002, 0.03, 2)
            scene[..., channel] += rng.uniform(10, 40) * np.sin(x * fx + y * fy + rng.uniform(0, 6.28))
    blocks = rng.uniform(-25, 25, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    scene += np.kron(blocks, np.ones((8, 8, 1), np.float32))[:height, :width]
    return np.clip(scene, 0, 255).astype(np.uint8)


def _frames(width: int, height: int, count: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """A sub-pixel camera pan across the scene (there and back), four moving discs, sensor grain.

    The fractional pan and the grain keep the inter frames from being near-free copies of their
    references, so the keyframe/inter-frame size ratio is that of camera footage (~5-10x), not 30x.
    """
    margin = height // 3
    scene = _texture(height + 2 * margin, 2 * width + 1, rng).astype(np.float32)
    grain = [rng.normal(0, GRAIN, (height, width, 1)).astype(np.float32) for _ in range(8)]
    discs = [
        (
            rng.uniform(0, width),
            rng.uniform(0, height),
            rng.uniform(-4, 4),
            rng.uniform(-3, 3),
            rng.uniform(height / 20, height / 8),
            rng.integers(0, 255, 3),
        )
        for _ in range(4)
    ]
    for t in range(count):
        x = width * (0.5 - 0.5 * np.cos(2 * np.pi * t / count))
        left, frac = int(x), x - int(x)
        top = int(margin + 0.9 * margin * np.sin(t / 70))
        window = scene[top : top + height, left : left + width + 1]
        frame = (1 - frac) * window[:, :-1] + frac * window[:, 1:] + grain[t % len(grain)]
        for x0, y0, vx, vy, radius, colour in discs:
            _draw_disc(frame, (x0 + vx * t) % width, (y0 + vy * t) % height, radius, colour)
        yield np.clip(frame, 0, 255).astype(np.uint8)


def _draw_disc(frame: np.ndarray, cx: float, cy: float, radius: float, colour: np.ndarray) -> None:
    y0, y1 = int(max(cy - radius, 0)), int(min(cy + radius + 1, frame.shape[0]))
    x0, x1 = int(max(cx - radius, 0)), int(min(cx + radius + 1, frame.shape[1]))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    frame[y0:y1, x0:x1][(xx - cx) ** 2 + (yy - cy) ** 2 < radius**2] = colour


def encode_clip(path: Path, width: int, height: int, seconds: int, gop: int) -> None:
    """x264 (veryfast, crf 23, B-frames) with a keyframe exactly every `gop` frames."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.gop_size = gop
        stream.options = {"preset": "veryfast", "crf": "23", "keyint_min": str(gop), "sc_threshold": "0"}
        for frame in _frames(width, height, seconds * FPS, rng):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def make_clips(directory: Path, sizes: list[tuple[int, int]], seconds: int) -> list[tuple[str, Path]]:
    clips = []
    for width, height in sizes:
        for gop_seconds in (1, 8):
            name = f"{width}x{height}_gop{gop_seconds}s_{seconds}s"
            path = directory / f"{name}.mp4"
            if not path.exists():
                start = time.perf_counter()
                encode_clip(path, width, height, seconds, gop_seconds * FPS)
                print(f"encoded {name}: {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - start:.0f} s")
            clips.append((name, path))
    return clips


# ---------------------------------------------------------------- the three paths


def reference_load(path: Path, indices: list[int]) -> torch.Tensor:
    """The original: full-resolution decord batch, then PIL bicubic short-side resize + centre crop."""
    frames = decord.VideoReader(str(path), num_threads=1).get_batch(indices).asnumpy()
    out = []
    for frame in frames:
        image = Image.fromarray(frame)
        w, h = image.size
        new_w, new_h = (SIZE, int(SIZE * h / w)) if w < h else (int(SIZE * w / h), SIZE)
        image = image.resize((new_w, new_h), Image.BICUBIC)
        left, top = int(round((new_w - SIZE) / 2.0)), int(round((new_h - SIZE) / 2.0))
        out.append(np.asarray(image.crop((left, top, left + SIZE, top + SIZE))))
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATION[NORM])
    return (x - mean) / std


def ours_load(path: Path, num_frames: int, sample: str, seed: int) -> torch.Tensor:
    frames = read_video(path, FrameSampling(num_frames, sample), random.Random(seed), backend="av")
    return FrameTransform(SIZE, "official", NORM)(frames)


def grey_levels(x: torch.Tensor) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATION[NORM])
    return (x * std + mean) * 255.0


def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


# ---------------------------------------------------------------- measurement


def measure(path: Path, num_frames: int, draws: int) -> dict:
    """Interleaved draws (a, b, c on the same seed), so load from other processes hits all three."""
    vlen = len(decord.VideoReader(str(path), num_threads=1))
    totals = {key: [0.0, 0.0] for key in ("a", "b", "c")}
    mad = []
    for seed in range(draws):
        indices = segment_indices(num_frames, vlen, "rand", random.Random(seed))
        runs = {
            "a": lambda indices=indices: reference_load(path, indices),
            "b": lambda seed=seed: ours_load(path, num_frames, "rand", seed),
            "c": lambda seed=seed: ours_load(path, num_frames, "rand_keyframe", seed),
        }
        outs = {}
        for key, fn in runs.items():
            outs[key], wall, cpu = timed(fn)
            totals[key][0] += wall
            totals[key][1] += cpu
        mad.append((grey_levels(outs["a"]) - grey_levels(outs["b"])).abs().mean().item())
    return {
        "draws": draws,
        "wall_s": {k: v[0] for k, v in totals.items()},
        "cpu_s": {k: v[1] for k, v in totals.items()},
        "mad": float(np.mean(mad)),
    }


def profile(path: Path, num_frames: int) -> None:
    """Where one reference clip's time goes, stage by stage (CPU ms, best of 3)."""
    reader = decord.VideoReader(str(path), num_threads=1)
    vlen = len(reader)
    indices = segment_indices(num_frames, vlen, "rand", random.Random(0))
    frames = reader.get_batch(indices).asnumpy()
    h, w = frames.shape[1:3]
    new_w = int(SIZE * w / h)
    uint8 = torch.from_numpy(frames).permute(0, 3, 1, 2)
    stages = {
        "decord: open (index the file)": lambda: decord.VideoReader(str(path), num_threads=1),
        "decord: open + get_batch": lambda: decord.VideoReader(str(path), num_threads=1).get_batch(indices),
        "decord: open + get_batch, decode-time resize": lambda: decord.VideoReader(
            str(path), num_threads=1, width=new_w, height=SIZE
        ).get_batch(indices),
        "PyAV: demux all packets (index)": lambda: _demux_all(path),
        "PyAV: sparse decode (read_video av)": lambda: read_video(
            path, FrameSampling(num_frames, "rand"), random.Random(0), backend="av"
        ),
        "PyAV: keyframe-only decode (rand_keyframe)": lambda: read_video(
            path, FrameSampling(num_frames, "rand_keyframe"), random.Random(0), backend="av"
        ),
        "resize: PIL bicubic per frame": lambda: [
            Image.fromarray(f).resize((new_w, SIZE), Image.BICUBIC) for f in frames
        ],
        "resize: torch float bicubic+antialias": lambda: F.interpolate(
            uint8.float(), size=(SIZE, new_w), mode="bicubic", antialias=True
        ),
        "resize: torch uint8 bicubic+antialias": lambda: F.interpolate(
            uint8, size=(SIZE, new_w), mode="bicubic", antialias=True
        ),
    }
    print(f"\nprofile: {path.name}, {num_frames} frames {indices}")
    for name, fn in stages.items():
        best = min(timed(fn)[2] for _ in range(3))
        print(f"  {name:<48s} {1e3 * best:8.1f} ms")
    _profile_decode_time_resize(path, indices, frames, new_w)


def _demux_all(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.demux(container.streams.video[0]))


def _profile_decode_time_resize(path: Path, indices: list[int], frames: np.ndarray, new_w: int) -> None:
    """Decode-time resizing (decord width/height: swscale) against PIL on full-resolution frames."""
    small = decord.VideoReader(str(path), num_threads=1, width=new_w, height=SIZE).get_batch(indices).asnumpy()
    pil = np.stack([np.asarray(Image.fromarray(f).resize((new_w, SIZE), Image.BICUBIC)) for f in frames])
    torch_u8 = (
        F.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2), size=(SIZE, new_w), mode="bicubic", antialias=True)
        .permute(0, 2, 3, 1)
        .numpy()
    )
    print(
        f"  MAD vs PIL: decode-time resize {np.abs(small.astype(float) - pil).mean():.2f}, "
        f"torch uint8 {np.abs(torch_u8.astype(float) - pil).mean():.3f} grey levels"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="640x360 only, 10-s clips, 3 draws")
    parser.add_argument("--clips-dir", type=Path, default=None, help="keep the generated clips here")
    parser.add_argument("--draws", type=int, default=6, help="clips loaded per path and configuration")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [(640, 360)] if args.quick else [(640, 360), (1280, 720)]
    seconds, draws = (10, 3) if args.quick else (30, args.draws)
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.clips_dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        clips = make_clips(directory, sizes, seconds)
        profile(clips[0][1], 8)
        results = {f"{name}/{t}f": measure(path, t, draws) for name, path in clips for t in (8, 16)}
    print_table(results)
    print(json.dumps(summary(results)))


def _rate(result: dict, key: str, clock: str) -> float:
    return result["draws"] / result[clock][key]


def print_table(results: dict) -> None:
    print(
        f"\n{'clip/frames':<34s} {'(a) ref':>9s} {'(b) ours':>9s} {'(c) keyfr':>9s} {'b/a':>6s} {'c/a':>6s} {'MAD':>6s}"
        "   (clips/s by CPU time; wall in brackets)"
    )
    for name, r in results.items():
        cpu = [_rate(r, k, "cpu_s") for k in "abc"]
        wall = [_rate(r, k, "wall_s") for k in "abc"]
        print(
            f"{name:<34s} {cpu[0]:9.2f} {cpu[1]:9.2f} {cpu[2]:9.2f} {cpu[1] / cpu[0]:6.2f} {cpu[2] / cpu[0]:6.2f}"
            f" {r['mad']:6.3f}   [{wall[0]:.2f} {wall[1]:.2f} {wall[2]:.2f}]"
        )


def summary(results: dict) -> dict:
    def ratio(key: str, clock: str, names) -> float:
        return sum(results[n][clock]["a"] for n in names) / sum(results[n][clock][key] for n in names)

    gop1 = [n for n in results if "_gop1s_" in n]
    return {
        "rates_clips_per_cpu_s": {n: {k: round(_rate(r, k, "cpu_s"), 3) for k in "abc"} for n, r in results.items()},
        "rates_clips_per_wall_s": {n: {k: round(_rate(r, k, "wall_s"), 3) for k in "abc"} for n, r in results.items()},
        "ratio": round(ratio("b", "cpu_s", results), 3),
        "ratio_keyframe": round(ratio("c", "cpu_s", gop1), 3),
        "ratio_wall": round(ratio("b", "wall_s", results), 3),
        "ratio_keyframe_wall": round(ratio("c", "wall_s", gop1), 3),
        "mad": round(float(np.mean([r["mad"] for r in results.values()])), 4),
    }


if __name__ == "__main__":
    main()
