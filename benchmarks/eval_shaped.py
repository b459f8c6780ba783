"""An MVBench-sized evaluation of a random paper-shaped model, its three parts timed apart (eval_throughput.py).

Weights are random, so only time means anything here: decoding (CPU workers), ViT + Q-Former and the LLM
(GPU) are each timed on a few batches after a warm-up and projected to the full run, so the bound of each
protocol is known. In an evaluation, decoding runs in DataLoader workers while the GPU works, so a
protocol's wall time is about max(decode, visual + LLM) with a warm frame cache for decode = 0.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from videochat2.device import place, plan, prepare_backend
from videochat2.models.qformer import QFormerConfig
from videochat2.models.videochat2 import VideoChat2, VideoChat2Config
from videochat2.models.vision import VisionConfig

# Paper shape: Vicuna-7B (fp16), UMT-L/16 at 224 px, 16 frames, 96 visual tokens; MVBench prompt lengths
# with the Llama tokenizer: ~60 tokens before the video (system prompt), ~160 after (question, options).
SHAPES = {
    "7b": dict(
        llm=dict(
            vocab_size=32000,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=2048,
        ),
        frames=16,
        size=224,
        before=60,
        after=160,
        batch=16,
    ),
    "tiny": dict(
        llm=dict(
            vocab_size=1000,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
        ),
        frames=4,
        size=64,
        before=12,
        after=24,
        batch=4,
    ),
}


def build(shape: str, device: torch.device) -> VideoChat2:
    """The random model, the LLM built in fp16 directly on the device (7B weights never touch the CPU)."""
    cfg = SHAPES[shape]
    if shape == "7b":
        vision, qformer = VisionConfig.umt_l16(img_size=cfg["size"]), QFormerConfig.bert_base(num_query_tokens=32)
    else:
        vision, qformer = VisionConfig.tiny(), QFormerConfig.tiny(vocab_size=1000)
    llm_dtype = torch.float16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        llm = AutoModelForCausalLM.from_config(LlamaConfig(**cfg["llm"], tie_word_embeddings=False), dtype=llm_dtype)
    model = VideoChat2(VideoChat2Config(num_query=96, qformer_text_input=True), vision, qformer, llm)
    return place(model.eval().requires_grad_(False), plan(device, "auto"))


def synced(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def timed_batches(run, batches: int, device: torch.device) -> float:
    """Seconds per batch of `run()`, after one warm-up call."""
    run()
    start = synced(device)
    for _ in range(batches):
        run()
    return (synced(device) - start) / batches


def decode_rate(root: Path, frames: int, size: int, batch: int, workers: int, limit: int) -> dict:
    """Clips per second of the evaluation's own decoding path (official frame rule, 224 px, CLIP statistics)."""
    from videochat2.eval.mvbench import load_questions
    from videochat2.eval.mvbench.data import FrameCache, FrameSpec, MVBenchDataset

    if not root.is_dir():
        return {"decode_clips": 0, "decode_note": f"{root} missing: decode not measured"}
    questions = load_questions(root)[:limit]
    dataset = MVBenchDataset(questions, FrameSpec(frames, size, "official", "clip"), FrameCache(None))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=list)
    start = time.perf_counter()
    read = sum(1 for items in loader for item in items if item["error"] is None)
    seconds = time.perf_counter() - start
    return {"decode_clips": read, "decode_clips_per_s": round(read / seconds, 2), "decode_workers": workers}


def shaped_run(args: argparse.Namespace) -> dict:
    """Decode, ViT + Q-Former and LLM times of an MVBench-sized run, each projected to `args.questions`."""
    device = plan(args.device).device
    prepare_backend(device)
    shape = SHAPES[args.model_shape]
    batch, frames, size = args.batch_size or shape["batch"], shape["frames"], shape["size"]
    torch.manual_seed(0)
    built = time.perf_counter()
    model = build(args.model_shape, device)
    build_s = time.perf_counter() - built
    vocab = shape["llm"]["vocab_size"]
    pixels = torch.randn(batch, frames, 3, size, size, device=device)
    instruction = torch.randint(5, 1000, (batch, 40), device=device)
    before = [torch.randint(5, vocab, (shape["before"],), device=device) for _ in range(batch)]
    after = [torch.randint(5, vocab, (shape["after"],), device=device) for _ in range(batch)]
    mask = torch.ones_like(instruction)

    def visual() -> torch.Tensor:
        return model.encode_visual(pixels, instruction, mask)

    tokens = visual()
    prompts = model.build_inputs(tokens, before, after, padding_side="left")
    prompts.pop("position_ids")

    def letters() -> torch.Tensor:
        return model.llm(**prompts, logits_to_keep=1, use_cache=False).logits

    def generate() -> torch.Tensor:
        new = args.new_tokens
        return model.llm.generate(**prompts, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)

    n_batches = math.ceil(args.questions / batch)
    visual_s = timed_batches(visual, args.sample_batches, device) * n_batches
    letters_s = timed_batches(letters, args.sample_batches, device) * n_batches
    generate_s = timed_batches(generate, max(1, args.sample_batches // 2), device) * n_batches
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    decode = decode_rate(Path(args.benchmark_root), frames, size, batch, args.workers, args.per_task * 20)
    rate = decode.get("decode_clips_per_s")
    decode_s = args.questions / rate if rate else None
    gpu_letters, gpu_generate = visual_s + letters_s, visual_s + generate_s
    return {
        "benchmark": "eval_shaped",
        "shape": args.model_shape,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "questions": args.questions,
        "batch_size": batch,
        "frames": frames,
        "image_size": size,
        "prompt_tokens": shape["before"] + 96 + shape["after"],
        "new_tokens": args.new_tokens,
        "build_s": round(build_s, 1),
        "vit_qformer_s": round(visual_s, 1),
        "llm_letter_logits_s": round(letters_s, 1),
        "llm_generate_s": round(generate_s, 1),
        **decode,
        "decode_s": round(decode_s, 1) if decode_s else None,
        "letter_logits_total_s": round(max(gpu_letters, decode_s or 0.0), 1),
        "generate_total_s": round(max(gpu_generate, decode_s or 0.0), 1),
        "letter_logits_total_warm_cache_s": round(gpu_letters, 1),
        "generate_total_warm_cache_s": round(gpu_generate, 1),
        "peak_memory_gb": round(peak, 1) if peak is not None else None,
    }
