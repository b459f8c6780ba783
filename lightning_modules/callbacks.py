"""Callbacks that leave the run directory's record behind (design §5)."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


def peak_memory_mb() -> float:
    """Peak accelerator memory when on CUDA, else the process's peak resident set size."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RunSummary(Callback):
    """Writes summary.json (steps, wall time, throughput, memory, skipped media, final metrics).

    `finished` is true only after `fit` returns normally, so an interrupted run is recognisable and
    the same command resumes it, while a finished one is left alone.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.samples = 0
        self.skipped: list[str] = []
        self.start = 0.0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += int(batch["pixel_values"].shape[0])
        self.skipped.extend(batch.get("skipped", []))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        wall = time.perf_counter() - self.start
        summary = {
            "finished": True,
            "stage": getattr(pl_module, "stage", None),
            "steps": trainer.global_step,
            "wall_time_s": round(wall, 2),
            "samples": self.samples,
            "samples_per_s": round(self.samples / wall, 2) if wall > 0 else 0.0,
            "peak_memory_mb": round(peak_memory_mb(), 1),
            "skipped_media": len(self.skipped),
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(summary, indent=2))
        if self.skipped:
            (self.path.parent / "skipped_media.txt").write_text("\n".join(self.skipped) + "\n")
