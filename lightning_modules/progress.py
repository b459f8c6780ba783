"""A progress line in the job log every N steps: what people tail on a cluster, where no progress bar renders."""

from __future__ import annotations

import logging
import time

from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """`1h02m`, `3m20s`, `45s`: short enough for a log line, exact enough for an ETA."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_line(
    step: int, max_steps: int, metrics: dict[str, float], lr: float | None, samples_per_s: float, eta_s: float
) -> str:
    """`step 120/300 | train/loss 1.234 train/vtc 0.51 | lr 1.0e-04 | 12.3 samples/s | ETA 3m20s`."""
    losses = " ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()) if k.startswith("train/"))
    parts = [f"step {step}/{max_steps}", losses or "loss -"]
    if lr is not None:
        parts.append(f"lr {lr:.1e}")
    parts += [f"{samples_per_s:.1f} samples/s", f"ETA {format_duration(eta_s)}"]
    return " | ".join(parts)


class ProgressLog(Callback):
    """Logs `progress_line` on rank 0 every `every_n_steps` optimizer steps and at the last one."""

    def __init__(self, every_n_steps: int = 10) -> None:
        if every_n_steps < 1:
            raise ValueError(f"callbacks.progress_log.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.start_step = self.last_logged = 0
        self.start_time = 0.0
        self.samples = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start_step = self.last_logged = trainer.global_step
        self.start_time, self.samples = time.perf_counter(), 0

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        self.samples += int(batch["pixel_values"].shape[0]) * trainer.world_size
        step, max_steps = trainer.global_step, trainer.max_steps
        # With gradient accumulation several batches end on one optimizer step: log it once.
        if trainer.global_rank != 0 or step == self.last_logged:
            return
        if step % self.every_n_steps and step != max_steps:
            return
        self.last_logged = step
        elapsed = time.perf_counter() - self.start_time
        eta = elapsed / (step - self.start_step) * max(max_steps - step, 0) if max_steps > 0 else 0.0
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        log.info(progress_line(step, max_steps, metrics, lr, self.samples / elapsed, eta))
