"""Cross-rank gathering for contrastive losses, usable with or without a process group.

The original's `AllGather` backward returns only this rank's slice of the incoming gradient. Every rank
computes the same global loss from the gathered tensors, so that slice is already d(loss)/d(local rows); the
data-parallel wrapper then *averages* the parameter gradients over ranks, which leaves the contrastive
gradient 1/world_size of what one process holding the whole batch would get (the other losses, computed
locally and averaged, are unaffected). `gather_with_grad` sums the incoming gradient over ranks before
slicing, so after that averaging the gradient equals the single-process one; `backward="local"` keeps the
original's local slice (what the official stage-1 weights were trained with).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def local_rank() -> int:
    """This process's GPU index on its node under torchrun (0 without a launcher)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def launched_world_size() -> int:
    """The number of processes a launcher (torchrun) started, before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", 1))


def init_from_launcher(device: torch.device) -> bool:
    """Join the process group torchrun's environment describes (NCCL for GPUs, gloo for CPUs); True if joined.

    A no-op for one process or when a group already exists, so the same code runs with or without torchrun.
    """
    if launched_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if world_size() > 1:
        dist.barrier()


def _all_gather(x: Tensor) -> tuple[list[Tensor], list[int]]:
    """All ranks' `x` (rows may differ in number, e.g. a short last batch) and their row counts."""
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.empty_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = x.new_zeros((max(sizes),) + x.shape[1:])
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return [part[:n] for part, n in zip(parts, sizes)], sizes


GATHER_BACKWARDS = ("sum", "local")


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, backward: str) -> Tensor:
        parts, sizes = _all_gather(x)
        ctx.start = sum(sizes[: rank()])
        ctx.local = x.shape[0]
        ctx.reduce = backward == "sum"
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous()
        if ctx.reduce:
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.local], None


def gather_with_grad(x: Tensor, backward: str = "sum") -> Tensor:
    """Concatenate `x` from all ranks along dim 0 (rank order); gradients flow back to the local rows.

    `backward`: "sum" sums the incoming gradient over ranks first (ours), "local" passes back this rank's
    slice only (the original). Without a process group (or with one rank) returns `x`.
    """
    if backward not in GATHER_BACKWARDS:
        raise ValueError(f"backward must be one of {GATHER_BACKWARDS}, got {backward!r}")
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x, backward)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate `x` (e.g. sample ids) from all ranks along dim 0; identity without a process group."""
    if world_size() == 1:
        return x
    return torch.cat(_all_gather(x)[0], dim=0)
