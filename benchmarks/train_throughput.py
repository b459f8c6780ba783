"""Training throughput and peak memory per stage and model size, measured in one run.

    python benchmarks/train_throughput.py --stage 1|2|3 [--steps 10] [--device cpu|cuda]

Random inputs and randomly initialised LLMs stand in for data and weights, so the numbers measure the
model step alone (forward, backward, optimizer). Prints a table, then one JSON object with the figures
on the last line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import dataclass

import torch

from transformers import LlamaConfig, LlamaForCausalLM

from videochat2.models.alignment import AlignmentConfig, VideoChat2Alignment
from videochat2.models.llm import LLMConfig, apply_lora
from videochat2.models.qformer import QFormerConfig
from videochat2.models.videochat2 import VideoChat2, VideoChat2Config
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
    llm_hidden: int = 128
    llm_layers: int = 2


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


def stage23_presets() -> list[Preset]:
    tiny, mid = stage1_presets()
    tiny = Preset(tiny.name, tiny.vision, tiny.qformer, tiny.embed_dim, 16, 8, text_len=64)
    mid = Preset("mid (ViT-B width, 4 blocks, 224px; LLM 1024-d, 4 layers)", mid.vision, mid.qformer, mid.embed_dim,
                 4, 8, text_len=128, llm_hidden=1024, llm_layers=4)
    return [tiny, mid]


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

    seconds = timed(step, steps, device)
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


def build_stage23(preset: Preset, stage: int) -> VideoChat2:
    llm_config = LlamaConfig(
        vocab_size=1000, hidden_size=preset.llm_hidden, intermediate_size=4 * preset.llm_hidden,
        num_hidden_layers=preset.llm_layers, num_attention_heads=max(4, preset.llm_hidden // 64),
    )
    llm = LlamaForCausalLM(llm_config).requires_grad_(False)
    if stage == 3:
        llm = apply_lora(llm, LLMConfig(preset="local", lora=True))
    config = VideoChat2Config(num_query=96, qformer_text_input=stage == 3)
    return VideoChat2(config, preset.vision, preset.qformer, llm)


def measure_stage23(preset: Preset, stage: int, steps: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build_stage23(preset, stage).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    b, size = preset.batch_size, preset.vision.img_size
    pixels = torch.randn(b, preset.num_frames, 3, size, size, device=device)
    before = [torch.randint(5, 999, (12,), device=device) for _ in range(b)]
    after = [torch.randint(5, 999, (preset.text_len,), device=device) for _ in range(b)]
    instruction = torch.randint(5, preset.qformer.vocab_size - 1, (b, 32), device=device)
    extra = {"instruction_ids": instruction, "instruction_mask": torch.ones_like(instruction)} if stage == 3 else {}

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(pixels, before, after, after, **extra)["loss"].backward()
        optimizer.step()

    seconds = timed(step, steps, device)
    tokens = b * (12 + 96 + preset.text_len)
    return {
        "preset": preset.name,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "batch_size": b,
        "frames": preset.num_frames,
        "samples_per_s": round(b * steps / seconds, 2),
        "tokens_per_s": round(tokens * steps / seconds, 1),
        "step_s": round(seconds / steps, 4),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
    }


def timed(step, steps: int, device: torch.device) -> float:
    """Seconds for `steps` calls after two warm-up calls."""
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", type=int, default=1, choices=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.stage == 1:
        rows = [measure_stage1(p, args.steps, device) for p in stage1_presets()]
    else:
        rows = [measure_stage23(p, args.stage, args.steps, device) for p in stage23_presets()]
    print(f"stage {args.stage} on {device.type} ({torch.get_num_threads()} threads)")
    columns = [k for k in rows[0] if k != "preset"]
    print(f"{'preset':58s}" + "".join(f"{c:>15s}" for c in columns))
    for row in rows:
        print(f"{row['preset']:58s}" + "".join(f"{row[c]:>15}" for c in columns))
    print(json.dumps({"stage": args.stage, "device": device.type, "results": rows}))


if __name__ == "__main__":
    main()
