"""Callbacks that leave the run directory's record behind (design §5)."""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

# The skip limit is judged once this many samples have been read, so that one bad file among the
# first few samples does not stop a run whose data is otherwise fine.
SKIP_LIMIT_MIN_SAMPLES = 100


def peak_memory_mb() -> float:
    """Peak accelerator memory when on CUDA, else the process's peak resident set size."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TooManySkippedMedia(RuntimeError):
    """More unreadable media than `data.max_skip_fraction` allows; names the first bad files."""


class RunSummary(Callback):
    """Writes summary.json (steps, wall time, throughput, memory, skipped media, final metrics).

    `finished` is true only after `fit` returns normally, so an interrupted run is recognisable and
    the same command resumes it, while a finished one is left alone.

    Skipped media (samples replaced because their file could not be read) are logged as `data/skipped`,
    appended to skipped_media.txt as they arrive (so the list survives a crash or a stop) and counted
    across a resume (the counts are part of the checkpoint). Above `max_skip_fraction` of the samples
    read, training stops with an error naming the first bad files.
    """

    def __init__(self, path: str, max_skip_fraction: float = 0.01) -> None:
        self.path = Path(path)
        self.skipped_path = self.path.parent / "skipped_media.txt"
        self.max_skip_fraction = max_skip_fraction
        self.samples = 0
        self.skipped: list[str] = []
        self.start = 0.0

    def state_dict(self) -> dict:
        return {"samples": self.samples, "skipped": list(self.skipped)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.samples = state_dict["samples"]
        self.skipped = list(state_dict["skipped"])

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = time.perf_counter()
        if trainer.global_rank == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The list restarts with the run: a resumed run rewrites what its checkpoint knew of.
            self.skipped_path.write_text("".join(f"{line}\n" for line in self.skipped))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A run trained further (a raised trainer.max_steps) is unfinished until this fit ends: an earlier
        # fit's summary left in place would call it finished if this one is interrupted.
        if trainer.global_rank == 0:
            self.path.unlink(missing_ok=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += int(batch["pixel_values"].shape[0])
        new = batch.get("skipped", [])
        if new:
            self.skipped.extend(new)
            with self.skipped_path.open("a") as listing:
                listing.write("".join(f"{line}\n" for line in new))
        skipped, read = self._totals(trainer)
        pl_module.log("data/skipped", float(skipped), on_step=True, on_epoch=False)
        if read >= SKIP_LIMIT_MIN_SAMPLES and skipped > self.max_skip_fraction * read:
            raise TooManySkippedMedia(
                f"{skipped} of {read} samples read had unreadable media ({skipped / read:.1%}, above "
                f"data.max_skip_fraction={self.max_skip_fraction}); first bad files:\n  "
                + "\n  ".join(list(dict.fromkeys(self.skipped))[:5])
                + f"\nAll are listed in {self.skipped_path}. Fix or remove them, or raise data.max_skip_fraction."
            )

    def _totals(self, trainer: Trainer) -> tuple[int, int]:
        """(skipped, read) over all ranks, so every rank takes the same decision at the same step."""
        counts = torch.tensor([len(self.skipped), self.samples + len(self.skipped)], dtype=torch.float64)
        if trainer.world_size > 1:
            counts = trainer.strategy.reduce(counts.to(trainer.strategy.root_device), reduce_op="sum").cpu()
        return int(counts[0]), int(counts[1])

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        skipped, _ = self._totals(trainer)
        if trainer.global_rank != 0:
            return
        wall = time.perf_counter() - self.start
        summary = {
            "finished": True,
            "stage": getattr(pl_module, "stage", None),
            "steps": trainer.global_step,
            # What it was trained towards: the same command with a higher trainer.max_steps trains it further.
            "max_steps": trainer.max_steps,
            "wall_time_s": round(wall, 2),
            "samples": self.samples,
            "samples_per_s": round(self.samples / wall, 2) if wall > 0 else 0.0,
            "peak_memory_mb": round(peak_memory_mb(), 1),
            "skipped_media": skipped,
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Beside the target, then renamed: a kill mid-write must not leave a summary that cannot be read.
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text(json.dumps(summary, indent=2))
        os.replace(partial, self.path)


class RunRecords(Callback):
    """Calls `write` (rank 0) once set-up has succeeded: data found, model built, any checkpoint restored.

    The run's config.yaml is written then, not before: a directory holding a config is a run that started,
    and a start that failed (a missing checkpoint, a bad data root) must not tie its directory to the
    mistaken settings, so the corrected command starts there cleanly.
    """

    def __init__(self, write: Callable[[], None]) -> None:
        self.write = write

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_rank == 0:
            self.write()
