"""Training throughput and peak memory per stage and model size, measured in one run.

    python benchmarks/train_throughput.py --stage 1|2|3 [--steps 10] [--device cpu|cuda]
    python benchmarks/train_throughput.py --ddp [--steps 10]      # stage 1: 2 gloo processes vs 1, on the CPU
    python benchmarks/train_throughput.py --llm7b [--steps 5]     # stage 3, 7B-shaped LLM: LoRA vs QLoRA (CUDA)
    python benchmarks/train_throughput.py --llm7b --profile 4     # where a bf16 LoRA step's time goes, batch 4

Random inputs and randomly initialised LLMs stand in for data and weights, so the numbers measure the
model step alone (forward, backward, optimizer). Prints a table, then one JSON object with the figures
on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

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
    mid = Preset(
        "mid (ViT-B width, 4 blocks, 224px; LLM 1024-d, 4 layers)",
        mid.vision,
        mid.qformer,
        mid.embed_dim,
        4,
        8,
        text_len=128,
        llm_hidden=1024,
        llm_layers=4,
    )
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
        vocab_size=1000,
        hidden_size=preset.llm_hidden,
        intermediate_size=4 * preset.llm_hidden,
        num_hidden_layers=preset.llm_layers,
        num_attention_heads=max(4, preset.llm_hidden // 64),
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


def ddp_worker(rank: int, world: int, preset: Preset, steps: int, threads: int, store: str, out: str) -> None:
    """One rank of a gloo DDP stage-1 run: the same per-rank batch as the single process."""
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    config = AlignmentConfig(embed_dim=preset.embed_dim, num_frames=preset.num_frames, freeze_vision=False)
    model = torch.nn.parallel.DistributedDataParallel(VideoChat2Alignment(config, preset.vision, preset.qformer))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    size, b = preset.vision.img_size, preset.batch_size
    pixels = torch.randn(b, preset.num_frames, 3, size, size)
    ids = torch.randint(5, preset.qformer.vocab_size - 1, (b, preset.text_len))
    idx = torch.arange(b) + rank * b

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(pixels, ids, torch.ones_like(ids), idx)["loss"].backward()
        optimizer.step()

    seconds = timed(step, steps, torch.device("cpu"))
    dist.barrier()
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"seconds": seconds}, f)
    dist.destroy_process_group()


def measure_ddp(preset: Preset, world: int, steps: int) -> dict:
    """Samples/s of `world` CPU processes sharing the machine's cores (threads split between them)."""
    threads = max(1, (os.cpu_count() or 1) // world)
    with tempfile.TemporaryDirectory() as tmp:
        store, out = os.path.join(tmp, "store"), os.path.join(tmp, "result.json")
        mp.spawn(ddp_worker, args=(world, preset, steps, threads, store, out), nprocs=world, join=True)
        with open(out) as f:
            seconds = json.load(f)["seconds"]
    return {
        "preset": f"{preset.name}, {world} process(es) x {threads} thread(s)",
        "processes": world,
        "batch_per_process": preset.batch_size,
        "samples_per_s": round(world * preset.batch_size * steps / seconds, 2),
        "step_s": round(seconds / steps, 4),
    }


def ddp_rows(steps: int) -> list[dict]:
    tiny = replace(stage1_presets()[0], batch_size=16)
    single, double = measure_ddp(tiny, 1, steps), measure_ddp(tiny, 2, steps)
    double["scaling_efficiency"] = round(double["samples_per_s"] / (2 * single["samples_per_s"]), 3)
    single["scaling_efficiency"] = 1.0
    return [single, double]


# Dense bf16 peak of common cards (FLOP/s), for model FLOPs utilisation.
PEAK_BF16 = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A6000": 155e12,
    "4090": 165e12,
    "3090": 71e12,
    "A10": 125e12,
    "L4": 121e12,
}


def quantize_linears(module: torch.nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> None:
    """Swap the LLM's Linear layers for NF4 ones in place, as `BitsAndBytesConfig` loading does (random weights)."""
    import bitsandbytes as bnb

    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.Linear) and name not in skip:
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=torch.bfloat16,
                compress_statistics=True,
                quant_type="nf4",
                quant_storage=torch.bfloat16,
                device=child.weight.device,
            )
            layer.weight = bnb.nn.Params4bit(
                child.weight.data.cpu(),
                requires_grad=False,
                compress_statistics=True,
                quant_type="nf4",
                quant_storage=torch.bfloat16,
            ).to(child.weight.device)
            layer.requires_grad_(False)
            setattr(module, name, layer)
        else:
            quantize_linears(child, skip)


def build_llm7b(shape: dict, qlora: bool, checkpointing: bool, device: torch.device) -> torch.nn.Module:
    """A 7B-shaped Llama with random bf16 weights built layer by layer on the device, optionally NF4, plus LoRA."""
    from videochat2.models.llm import enable_gradient_checkpointing

    config = LlamaConfig(**shape, tie_word_embeddings=False)
    with torch.device(device):
        llm = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    if qlora:
        quantize_linears(llm)
    llm.requires_grad_(False)
    if checkpointing:
        enable_gradient_checkpointing(llm)
    return apply_lora(llm, LLMConfig(preset="local", lora=True))


def measure_llm7b(
    shape: dict,
    qlora: bool,
    checkpointing: bool,
    batch: int,
    steps: int,
    device: torch.device,
    vision: VisionConfig,
    qformer: QFormerConfig,
    frames: int,
    text_len: int,
    profile: bool = False,
) -> dict:
    """Stage 3 (UMT-L, Q-Former, LoRA on a 7B-shaped LLM) under bf16 autocast; `profile`: where the time goes."""
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    llm = build_llm7b(shape, qlora, checkpointing, device)
    vision = replace(vision, checkpoint_num=vision.num_blocks if checkpointing else 0)
    model = VideoChat2(VideoChat2Config(num_query=96, qformer_text_input=True), vision, qformer, llm).to(device)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    size = vision.img_size
    pixels = torch.randn(batch, frames, 3, size, size, device=device)
    before = [torch.randint(5, 999, (12,), device=device) for _ in range(batch)]
    after = [torch.randint(5, 999, (text_len,), device=device) for _ in range(batch)]
    instruction = torch.randint(5, qformer.vocab_size - 1, (batch, 32), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(
                pixels, before, after, after, instruction_ids=instruction, instruction_mask=torch.ones_like(instruction)
            )["loss"]
        loss.backward()
        optimizer.step()

    seconds = timed(step, steps, device)
    tokens = batch * (12 + 96 + text_len)
    h, layers = shape["hidden_size"], shape["num_hidden_layers"]
    # Matmul weights: the head and each layer's attention (4 h^2) and MLP (3 h x intermediate).
    llm_params = shape["vocab_size"] * h + layers * (4 * h * h + 3 * h * shape["intermediate_size"])
    # Frozen base: forward 2N plus the input-gradient half of backward 2N per token (recomputation excluded).
    flops = 4 * llm_params * tokens * steps / seconds
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    row = {
        "preset": f"{'QLoRA nf4' if qlora else 'LoRA bf16'}{' + checkpointing' * checkpointing}, batch {batch}",
        "batch_size": batch,
        "tokens_per_s": round(tokens * steps / seconds, 1),
        "mfu": round(flops / peak, 3) if peak else None,
        "step_s": round(seconds / steps, 3),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
    }
    if profile:
        row["profile"] = profile_steps(step, model, device)
    return row


def profile_steps(step, model: VideoChat2, device: torch.device, steps: int = 2, top: int = 15) -> dict:
    """The ops that take a training step's time (device time on a GPU), and the forward time of each component.

    Forward ranges are labelled with hooks (`forward:vision_encoder|qformer|llm`); the backward pass shows in
    the op list (e.g. the attention and matmul backward kernels).
    """
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    cuda = device.type == "cuda"
    ranges: dict[str, record_function] = {}
    handles = []
    for name, part in (("vision_encoder", model.vision_encoder), ("qformer", model.qformer.bert), ("llm", model.llm)):

        def enter(module, args, name=name):
            ranges[name] = record_function(f"forward:{name}")
            ranges[name].__enter__()

        def leave(module, args, output, name=name):
            ranges.pop(name).__exit__(None, None, None)

        handles += [part.register_forward_pre_hook(enter), part.register_forward_hook(leave)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
    for handle in handles:
        handle.remove()
    events = prof.key_averages()
    self_key = "self_device_time_total" if cuda else "self_cpu_time_total"
    total_key = "device_time_total" if cuda else "cpu_time_total"
    total = sum(getattr(e, self_key) for e in events) or 1.0
    ops = sorted((e for e in events if not e.key.startswith("forward:")), key=lambda e: -getattr(e, self_key))
    return {
        "time": "device" if cuda else "cpu",
        "step_ms": round(total / 1000 / steps, 1),
        "forward_ms": {
            e.key.removeprefix("forward:"): round(getattr(e, total_key) / 1000 / steps, 1)
            for e in events
            if e.key.startswith("forward:")
        },
        "top_ops": [
            {
                "op": e.key,
                "ms_per_step": round(getattr(e, self_key) / 1000 / steps, 2),
                "share": round(getattr(e, self_key) / total, 3),
                "calls_per_step": e.count // steps,
            }
            for e in ops[:top]
        ],
    }


def llm7b_setup(small: bool) -> tuple[dict, VisionConfig, QFormerConfig, int, int, list[int]]:
    """LLM shape, ViT, Q-Former, frames, answer tokens and the default batch sizes (`small`: a CPU-sized check)."""
    if small:  # the same code path at a CPU-sized shape, to check it runs
        shape = dict(
            vocab_size=1000,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
        )
        return shape, VisionConfig.tiny(), QFormerConfig.tiny(vocab_size=1000), 4, 32, [1, 2]
    shape = dict(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=2048,
    )
    vision, qformer = VisionConfig.umt_l16(img_size=224), QFormerConfig.bert_base(num_query_tokens=96)
    return shape, vision, qformer, 8, 512, [1, 2, 4, 8, 16, 32]


def llm7b_profile(batch: int, device: torch.device, small: bool) -> dict:
    """One bf16 LoRA configuration (no checkpointing) timed and profiled: where its step time goes."""
    shape, vision, qformer, frames, text_len, _ = llm7b_setup(small)
    row = measure_llm7b(shape, False, False, batch, 2, device, vision, qformer, frames, text_len, profile=True)
    return {"benchmark": "llm7b_profile", **row}


def llm7b_rows(steps: int, device: torch.device, small: bool, batches: list[int] | None = None) -> list[dict]:
    """bf16 LoRA vs QLoRA, with and without checkpointing, at batch 1 and the largest batch that fits.

    `batches`: the batch sizes tried, in increasing order (default 1 to 32; fewer keep a timed check short).
    """
    shape, vision, qformer, frames, text_len, default_batches = llm7b_setup(small)
    batches = batches or default_batches
    rows = []
    for qlora in (False, True):
        for checkpointing in (False, True):
            fitted = None
            for batch in batches:
                try:
                    row = measure_llm7b(
                        shape, qlora, checkpointing, batch, steps, device, vision, qformer, frames, text_len
                    )
                except torch.OutOfMemoryError:
                    break
                print(json.dumps({"llm7b_row": row}), flush=True)  # kept by a caller that stops the run early
                if batch == 1:
                    rows.append(row)
                fitted = row
            if fitted is not None and fitted["batch_size"] != 1:
                rows.append(fitted)
    return rows


def print_rows(title: str, rows: list[dict]) -> None:
    print(title)
    columns = [k for k in rows[0] if k != "preset"]
    print(f"{'preset':58s}" + "".join(f"{c:>20s}" for c in columns))
    for row in rows:
        print(f"{row['preset']:58s}" + "".join(f"{str(row.get(c)):>20s}" for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", type=int, default=1, choices=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ddp", action="store_true", help="stage 1: DDP with 2 CPU processes vs 1 process")
    parser.add_argument("--llm7b", action="store_true", help="stage 3 with a 7B-shaped LLM: LoRA vs QLoRA (CUDA)")
    parser.add_argument("--small", action="store_true", help="with --llm7b: a tiny shape, to check the path on a CPU")
    parser.add_argument("--batches", help="with --llm7b: batch sizes tried, e.g. 1,4,8 (default 1,2,4,8,16,32)")
    parser.add_argument("--profile", type=int, metavar="BATCH", help="with --llm7b: profile bf16 LoRA at BATCH")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.ddp:
        rows = ddp_rows(args.steps)
        print_rows(f"stage 1, DDP on the CPU ({os.cpu_count()} cores)", rows)
        print(json.dumps({"benchmark": "ddp_cpu", "results": rows}))
        return
    if args.llm7b:
        if device.type != "cuda" and not args.small:
            print("--llm7b needs a CUDA device (none here); --small runs the same path at a tiny shape")
            return
        if args.profile:
            print(json.dumps(llm7b_profile(args.profile, device, args.small)))
            return
        batches = [int(b) for b in args.batches.split(",")] if args.batches else None
        rows = llm7b_rows(args.steps, device, args.small, batches)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print_rows(f"stage 3, {'tiny' if args.small else '7B'}-shaped LLM on {name}", rows)
        print(json.dumps({"benchmark": "llm7b", "device": name, "results": rows}))
        return
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
