"""Device placement: parsing, auto, a missing GPU as one line, which dtype runs where, batches moved."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from tests.conftest import REPO
from videochat2.device import (
    DeviceError,
    Placement,
    for_rank,
    move_batch,
    place,
    plan,
    prepare_backend,
    resolve_device,
)
from videochat2.models.qformer import QFormerConfig
from videochat2.models.videochat2 import VideoChat2, VideoChat2Config
from videochat2.models.vision import VisionConfig

NO_CUDA = not torch.cuda.is_available()


def test_cpu_and_auto_resolve_to_a_device_that_exists():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:-1", "mps0", ""])
def test_unknown_device_names_are_refused_in_one_line(name):
    with pytest.raises(DeviceError, match="device must be auto, cpu, cuda or cuda:N") as error:
        resolve_device(name)
    assert "\n" not in str(error.value)


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_asking_for_cuda_without_one_is_a_one_line_error(name):
    with pytest.raises(DeviceError, match="no usable CUDA GPU") as error:
        plan(name)
    assert "\n" not in str(error.value)


def test_unknown_precision_is_refused():
    with pytest.raises(DeviceError, match="precision must be one of"):
        plan("cpu", "fp16")


def test_precision_decides_casts_and_autocast_regions():
    cpu = torch.device("cpu")
    assert plan("cpu", "auto") == Placement(cpu, "auto")
    assert plan("cpu", "bf16-true").weights == torch.bfloat16
    assert plan("cpu", "32-true").weights == torch.float32
    mixed = plan("cpu", "bf16-mixed")
    assert (mixed.weights, mixed.forward_autocast, mixed.visual_autocast) == (None, torch.bfloat16, None)
    # On a GPU, auto is the original's: the visual path under fp16 autocast, the LLM as loaded.
    gpu = Placement(torch.device("cuda"), "auto", visual_autocast=torch.float16)
    assert gpu.pin_memory and not plan("cpu").pin_memory
    with mixed.autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with plan("cpu").autocast():
        assert not torch.is_autocast_enabled("cpu")


def tiny_videochat2() -> VideoChat2:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llm = LlamaForCausalLM(
        LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    )
    vision = VisionConfig.tiny(img_size=32, embed_dim=32, depth=1, num_heads=2)
    qformer = QFormerConfig.tiny(
        vocab_size=40, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, encoder_width=32
    )
    return VideoChat2(VideoChat2Config(num_query=4, num_base_query=4), vision, qformer, llm).eval()


def test_visual_autocast_runs_only_the_visual_path_at_the_lower_dtype():
    """bf16 autocast on the CPU stands in for the GPU's fp16: the ViT/Q-Former output is low precision,
    the LLM's input embeddings stay in its own dtype, and the logits follow the fp32 run closely."""
    model = tiny_videochat2()
    pixels = torch.randn(2, 2, 3, 32, 32)
    ids = [torch.tensor([1, 5, 6]), torch.tensor([1, 7])]
    after = [torch.tensor([8, 9]), torch.tensor([10, 11, 12])]
    reference = model.next_token_logits(pixels, ids, after)
    place(model, Placement(torch.device("cpu"), "auto", visual_autocast=torch.bfloat16))
    assert model.visual_autocast == torch.bfloat16
    assert model.encode_visual(pixels).dtype == torch.bfloat16
    assert model.llm.dtype == torch.float32
    batch = model.prompt_batch(pixels, ids, after)
    assert batch["inputs_embeds"].dtype == torch.float32
    low = model.next_token_logits(pixels, ids, after)
    assert not torch.equal(low, reference), "the autocast region did not run at the lower precision"
    torch.testing.assert_close(low, reference, atol=0.1, rtol=0.05)


def test_true_precisions_cast_every_weight():
    model = place(tiny_videochat2(), plan("cpu", "bf16-true"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.visual_autocast is None


def test_a_4bit_llm_refuses_the_cpu():
    model = nn.Sequential(nn.Linear(2, 2))
    model[0].is_loaded_in_4bit = True
    with pytest.raises(DeviceError, match="4-bit"):
        place(model, plan("cpu"))


def test_batches_stay_put_on_the_cpu_and_keep_their_non_tensor_parts():
    batch = {"pixel_values": torch.zeros(1), "ids": [torch.ones(2)], "questions": ["q"], "mask": None}
    assert move_batch(batch, torch.device("cpu")) is batch


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU")
def test_batches_move_to_the_gpu_with_their_lists_of_tensors():
    batch = {"pixel_values": torch.zeros(1).pin_memory(), "ids": [torch.ones(2)], "questions": ["q"], "mask": None}
    moved = move_batch(batch, torch.device("cuda"))
    assert moved["pixel_values"].is_cuda and moved["ids"][0].is_cuda
    assert moved["questions"] == ["q"] and moved["mask"] is None


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
@pytest.mark.slow  # starts fresh interpreters importing torch
@pytest.mark.parametrize("script", ["eval.py", "chat"])
def test_the_commands_refuse_a_missing_gpu_in_one_line(script, tmp_path):
    """No traceback: the user reads one line naming the device (checked before any model is read)."""
    if script == "eval.py":
        command = [sys.executable, "eval.py", "device=cuda", f"paths.output_root={tmp_path}"]
    else:
        video = tmp_path / "v.mp4"
        video.write_bytes(b"")
        command = [sys.executable, "-m", "videochat2.chat", "--ckpt", str(tmp_path), "--video", str(video)]
        command += ["--device", "cuda:0", "hi"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].endswith("no usable CUDA GPU (use device=cpu)"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_gpus_let_fp32_matmuls_use_tf32_and_cpus_are_left_alone():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        prepare_backend(torch.device("cpu"))
        assert torch.get_float32_matmul_precision() == "highest"
        prepare_backend(torch.device("cuda"))
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_each_torchrun_process_takes_its_own_gpu():
    assert for_rank("cuda", 3) == "cuda:3" and for_rank("cpu", 3) == "cpu" and for_rank("cuda:1", 3) == "cuda:1"
    assert for_rank("auto", 2) == ("cuda:2" if torch.cuda.is_available() else "auto")
