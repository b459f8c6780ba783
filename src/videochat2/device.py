"""Where a loaded model runs and at which precision: the one place evaluation, chat and export decide it.

`device`: `auto` (the GPU when there is one), `cpu`, `cuda` or `cuda:N`. Asking for a GPU that is not
there is a `DeviceError` with one line saying so, raised before any weight is read.

`precision`:
- `auto`: the original's inference. On a GPU the ViT, Q-Former and projection run under fp16 autocast
  (the original's `maybe_autocast` in `encode_img`) and the LLM in its own dtype (`model.llm.dtype`); on
  the CPU everything runs as loaded, without autocast.
- `32-true`, `16-true`, `bf16-true`: every weight cast to that dtype (a 4-bit LLM keeps its packing), no
  autocast.
- `16-mixed`, `bf16-mixed`: weights as loaded, the whole forward under autocast at that dtype.

Batches travel with `move_batch`: from pinned memory (`pin_memory`, on a GPU) with `non_blocking` copies.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS = ("auto", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed")
DTYPES = {"32": torch.float32, "16": torch.float16, "bf16": torch.bfloat16}
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DeviceError(ValueError):
    """A device or precision that cannot be used here; its message is the whole story, in one line."""


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto|cpu|cuda|cuda:N` -> a torch device that exists on this machine (else `DeviceError`)."""
    text = str(name).strip().lower()
    if not DEVICE_PATTERN.match(text):
        raise DeviceError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        raise DeviceError(f"device={text} was asked for, but this machine has no usable CUDA GPU (use device=cpu)")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"device={text} was asked for, but this machine has {count} CUDA GPU(s)")
    return device


def for_rank(name: str | torch.device, local_rank: int) -> str:
    """The device one of several processes on a node uses: `auto`/`cuda` become its own GPU `cuda:<local_rank>`."""
    text = str(name).strip().lower()
    if text == "cuda" or (text == "auto" and torch.cuda.is_available()):
        return f"cuda:{local_rank}"
    return text


@dataclass(frozen=True)
class Placement:
    """A device and what runs at which dtype there (see the module docstring)."""

    device: torch.device
    precision: str = "auto"
    # Weights cast to this dtype (None: as loaded).
    weights: torch.dtype | None = None
    # Autocast dtype of the visual path (ViT, Q-Former, projection) and of the whole forward.
    visual_autocast: torch.dtype | None = None
    forward_autocast: torch.dtype | None = None

    @property
    def pin_memory(self) -> bool:
        """Pinned host memory only pays (and only works) when batches go to a GPU."""
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The whole-forward autocast of the `*-mixed` precisions; a no-op otherwise."""
        return autocast(self.device, self.forward_autocast)

    def visual(self) -> contextlib.AbstractContextManager:
        """Autocast for code that runs only the visual path (retrieval, the probe): visual or whole-forward."""
        return autocast(self.device, self.forward_autocast or self.visual_autocast)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """`torch.autocast` at `dtype` on `device`'s kind, or nothing when `dtype` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def plan(device: str | torch.device = "auto", precision: str = "auto") -> Placement:
    """The placement `device` and `precision` ask for (checked here, before any model is built)."""
    if precision not in PRECISIONS:
        raise DeviceError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    resolved = resolve_device(device)
    if precision == "auto":
        visual = torch.float16 if resolved.type == "cuda" else None
        return Placement(resolved, precision, visual_autocast=visual)
    bits, kind = precision.split("-")
    if kind == "true":
        return Placement(resolved, precision, weights=DTYPES[bits])
    return Placement(resolved, precision, forward_autocast=DTYPES[bits])


def is_quantized(module: nn.Module) -> bool:
    """A bitsandbytes 4-bit/8-bit model: placed on its GPU when loaded, and never cast."""
    flags = ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized")
    return any(getattr(module, flag, False) is True for flag in flags)


def quantized_parts(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if is_quantized(m)]


def place(model: nn.Module, placement: Placement) -> nn.Module:
    """Move (and cast) `model` as `placement` says and record the visual autocast on it; returns `model`.

    A quantized LLM already sits on the GPU it was loaded to, so only the other parts move and are cast.
    """
    quantized = quantized_parts(model)
    if quantized and placement.device.type != "cuda":
        raise DeviceError("a 4-bit (bitsandbytes) LLM runs only on a CUDA GPU; use device=cuda or an unquantized LLM")
    skipped = {id(p) for part in quantized for p in [*part.parameters(), *part.buffers()]}
    for module in model.modules():
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if id(tensor) in skipped:
                continue
            dtype = placement.weights if tensor.is_floating_point() else None
            tensor.data = tensor.data.to(device=placement.device, dtype=dtype)
    if hasattr(model, "visual_autocast"):
        model.visual_autocast = placement.visual_autocast
    return model


def move_batch(batch: dict, device: torch.device) -> dict:
    """Tensors (and lists of tensors) of `batch` on `device`, copied asynchronously from pinned memory."""
    if device.type == "cpu":
        return batch
    return {key: _move(value, device) for key, value in batch.items()}


def _move(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return type(value)(v.to(device, non_blocking=True) for v in value)
    return value


def on_device(batches: Iterable[dict], device: torch.device) -> Iterator[dict]:
    """Each batch of `batches` moved to `device` (see `move_batch`)."""
    for batch in batches:
        yield move_batch(batch, device)


def prepare_backend(device: torch.device) -> None:
    """On a GPU, let fp32 matmuls use TF32 tensor cores: the speed the GPU is there for, at inference accuracy."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
