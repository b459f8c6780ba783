"""Progress: a line in the job log every N steps (what people tail on a cluster, where no bar renders), and a
terminal bar that counts optimizer steps of `trainer.max_steps`."""

from __future__ import annotations

import logging
import time

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar

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


class StepProgressBar(TQDMProgressBar):
    """One bar for the whole fit, counting optimizer steps of `trainer.max_steps`, the loss beside them.

    Lightning's bar counts the batches of an epoch; our runs are bounded by steps and their mixed streams
    have no natural epoch, so it showed `Epoch 1/-2` and restarted every few batches. A resumed run starts
    the bar at the step it resumes from.
    """

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        stage = getattr(pl_module, "stage", None)
        bar.set_description(f"stage {stage}" if stage else "steps")
        bar.initial = bar.n = trainer.global_step  # tqdm's rate counts from `initial`

    def on_train_epoch_start(self, trainer: Trainer, *_) -> None:
        """Nothing: the bar spans epochs."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self._should_update(step, self.train_progress_bar.total or 0):
            self.train_progress_bar.n = step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Nothing: the bar closes when the fit ends."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict:
        """The losses only: the logger's version number means nothing to a run named by its directory."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
