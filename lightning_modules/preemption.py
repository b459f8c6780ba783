"""Stop on a preemption signal at a step boundary, leaving a `last.ckpt` that resumes exactly.

A scheduler announces the end of a job with a signal (SIGTERM on `scancel`/requeue, SIGUSR1 from
`sbatch --signal`, SIGUSR2 from submitit). Handling it inside the signal handler would save or exit in the
middle of a step (Lightning's own SLURM handler saves there) and, under DDP, on one rank only. This callback
only records the signal; at the end of the current step all ranks agree on it, write `last.ckpt` together
and then run the handler that was installed before (Lightning's or submitit's requeue), and the run stops
before the next step. A killed run therefore resumes from the step it was in, not from the last periodic
checkpoint.

Checkpoints also carry each rank's RNG states, put back where the uninterrupted run had them, so dropout
masks and sampled negatives continue as if the run had never stopped. Samples drawn from the global
Python RNG while the loader prefetches match only when the run resumes at an epoch boundary; mid-epoch
they match when the dataset seeds each sample from (seed, epoch, index).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


def rng_states() -> dict[str, Any]:
    """The global RNG states, as tensors and plain values so that `weights_only` loading accepts them."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def state_after_loader_seed_draw(state: torch.Tensor) -> torch.Tensor:
    """The torch RNG state after a DataLoader without its own generator creates an iterator (one int64 draw).

    After an epoch's last step the uninterrupted run makes the next epoch's iterator before its next step;
    a resumed run makes its iterators at other times, so the checkpoint holds the state the next step saw.
    """
    generator = torch.Generator()
    generator.set_state(state)
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    return generator.get_state()


def set_rng_states(states: dict[str, Any], kinds: tuple[str, ...] = ("torch", "python", "numpy", "cuda")) -> None:
    if "torch" in kinds:
        torch.set_rng_state(states["torch"])
    if "python" in kinds:
        random.setstate(states["python"])
    if "numpy" in kinds:
        name, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in kinds and "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


class PreemptionCheckpoint(Callback):
    """Write `path` at the step boundary after one of `signals`, then stop the run (exit code 128 + signal).

    The handler found for a signal when training starts (submitit's or Lightning's SLURM requeue) runs
    after the checkpoint is written, so whoever owns requeue still does it. Lightning's own SIGTERM
    handler is not chained: stopping is done here, on every rank at the same step.
    """

    def __init__(self, path: str, signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1", "SIGUSR2")) -> None:
        self.path = Path(path)
        self.signals = [signal.Signals[name] if isinstance(name, str) else signal.Signals(name) for name in signals]
        self._pending = 0
        self._stop_code: int | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._rank = 0
        self._resume_rng: dict | None = None
        self._loader_draw_follows = False

    @property
    def state_key(self) -> str:
        return "PreemptionCheckpoint"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._rank = trainer.global_rank

    # Signals: installed once Lightning has installed its own, so those can be chained.
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._record)
        if self._resume_rng is not None:
            # Before the loader draws its first samples from them.
            set_rng_states(self._resume_rng, ("python", "numpy"))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self._pending = self._pending or signum

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        # Runs before ModelCheckpoint's hook (Lightning orders checkpoint callbacks last), so its saves see it too.
        at_epoch_end = batch_idx + 1 >= trainer.num_training_batches or bool(
            trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        )
        loader = trainer.train_dataloader
        reseeds = getattr(loader, "generator", 0) is None and not getattr(loader, "persistent_workers", False)
        self._loader_draw_follows = at_epoch_end and reseeds
        signum = self._agreed_signal(trainer)
        if not signum:
            return
        log.warning("received %s: saving %s at step %d", signal.Signals(signum).name, self.path, trainer.global_step)
        self._save(trainer)
        log.warning("saved checkpoint on %s at step %d", signal.Signals(signum).name, trainer.global_step)
        self._chain(signum)
        self._stop_code = 128 + signum

    def _agreed_signal(self, trainer: Trainer) -> int:
        """The signal any rank received (so every rank saves and stops at the same step)."""
        pending = torch.tensor(self._pending)
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            pending = pending.to(trainer.strategy.root_device)
            dist.all_reduce(pending, op=dist.ReduceOp.MAX)
        return int(pending.item())

    def _save(self, trainer: Trainer) -> None:
        """Write next to `path` and rename, so a kill during the write leaves the previous checkpoint intact.

        A ModelCheckpoint that keeps its last checkpoint at `path` is told first, so the state saved with the
        checkpoint records it and the resumed run overwrites this file instead of writing beside it.
        """
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath is not None:
                last = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
                if last.resolve() == self.path.resolve():
                    callback.last_model_path = str(last)
        partial = self.path.with_name(self.path.name + ".partial")
        trainer.save_checkpoint(partial)
        if trainer.is_global_zero:
            if self.path.is_dir():
                shutil.rmtree(self.path)
            os.replace(partial, self.path)
        trainer.strategy.barrier("preemption_checkpoint")

    def _chain(self, signum: int) -> None:
        previous = self._previous.get(signal.Signals(signum))
        if signum != signal.SIGTERM and callable(previous):
            previous(signum, None)

    # Stop before the next step; the step that was saved is fully logged by then.
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        self._stop_if_signalled()
        if self._resume_rng is not None:
            set_rng_states(self._resume_rng, ("torch", "cuda"))
            self._resume_rng = None

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop_if_signalled()

    def _stop_if_signalled(self) -> None:
        if self._stop_code is not None:
            raise SIGTERMException(self._stop_code)

    # RNG states of every rank, gathered by all ranks (state_dict runs on each of them during a save).
    def state_dict(self) -> dict[str, Any]:
        states = rng_states()
        if self._loader_draw_follows:
            states["torch"] = state_after_loader_seed_draw(states["torch"])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, states)
        else:
            gathered = [states]
        return {"rng_states": gathered}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("rng_states") or []
        if self._rank < len(states):
            self._resume_rng = states[self._rank]
        else:
            log.warning(
                "checkpoint has RNG states for %d ranks, not for rank %d: RNG not restored", len(states), self._rank
            )
