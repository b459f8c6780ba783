"""Training throughput and peak memory per stage and model size, measured in one run.

    python benchmarks/train_throughput.py --stage 1 [--steps 10] [--device cpu|cuda]

Random inputs stand in for data so the numbers measure the model step alone (forward, backward,
optimizer). Prints a table, then one JSON object with the figures on the last line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import dataclass

import torch

from videochat2.models.alignment import AlignmentConfig, VideoChat2Alignment
from videochat2.models.qformer import QFormerConfig
from videochat2.models.vision import VisionConfig


@dataclass
class Preset:
    name: str
    vision: VisionConfig
    qformer: QFormerConfig
    embed_dim: int
    batch_size: int
    num_frames: int
    text_len: int = 32


def stage1_presets() -> list[Preset]:
    tiny_vision = VisionConfig.tiny()
    mid_vision = VisionConfig(img_size=224, patch_size=16, embed_dim=768, depth=5, num_heads=12)
    return [
        Preset("tiny", tiny_vision, QFormerConfig.tiny(vocab_size=1000, encoder_width=128), 128, 32, 4),
        Preset(
            "mid (ViT-B width, 4 blocks, 224px)",
            mid_vision,
            QFormerConfig.tiny(
                vocab_size=30523, hidden_size=768, num_heads=12, intermediate_size=3072, encoder_width=768
            ),
            256,
            8,
            4,
        ),
    ]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_stage1(preset: Preset, steps: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    config = AlignmentConfig(embed_dim=preset.embed_dim, num_frames=preset.num_frames, freeze_vision=False)
    model = VideoChat2Alignment(config, preset.vision, preset.qformer).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    size = preset.vision.img_size
    pixels = torch.randn(preset.batch_size, preset.num_frames, 3, size, size, device=device)
    ids = torch.randint(5, preset.qformer.vocab_size - 1, (preset.batch_size, preset.text_len), device=device)
    mask = torch.ones_like(ids)
    idx = torch.arange(preset.batch_size, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(pixels, ids, mask, idx)["loss"].backward()
        optimizer.step()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    return {
        "preset": preset.name,
        "params_m": round(params / 1e6, 2),
        "batch_size": preset.batch_size,
        "frames": preset.num_frames,
        "samples_per_s": round(preset.batch_size * steps / seconds, 2),
        "step_s": round(seconds / steps, 4),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", type=int, default=1, choices=[1])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [measure_stage1(p, args.steps, device) for p in stage1_presets()]
    print(f"stage {args.stage} on {device.type} ({torch.get_num_threads()} threads)")
    print(f"{'preset':40s} {'params(M)':>10s} {'batch':>6s} {'samples/s':>10s} {'step(s)':>8s} {'peak MB':>9s}")
    for r in rows:
        print(
            f"{r['preset']:40s} {r['params_m']:10.2f} {r['batch_size']:6d} {r['samples_per_s']:10.2f} "
            f"{r['step_s']:8.3f} {r['peak_memory_mb']:9.1f}"
        )
    print(json.dumps({"stage": args.stage, "device": device.type, "results": rows}))


if __name__ == "__main__":
    main()
