"""What a run directory holds after interruptions, resumes, concurrent starts and failed writes.

The Lightning runs here are a two-parameter model on random numbers with the package's own callbacks,
logger and checkpoint IO, so each fit takes a fraction of a second.
"""

from __future__ import annotations

import copy
import csv
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import tomllib
import torch
from hydra.utils import instantiate
from lightning.pytorch.demos.boring_classes import BoringModel
from omegaconf import OmegaConf, open_dict

from lightning_modules.callbacks import RunRecords
from lightning_modules.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from lightning_modules.loggers import ResumingCSVLogger
from lightning_modules.preemption import PreemptionCheckpoint
from recipes.train import (
    check_resumable,
    check_same_run,
    clear_for_fresh_start,
    stage_dir_of,
    train,
    trained_further,
    validate,
)
from tests.unit.test_configs import compose_train
from videochat2.checkpoints import CheckpointError
from videochat2.run_lock import RunLock, RunLockedError

REPO = Path(__file__).resolve().parents[2]


class LoggingModel(BoringModel):
    """Logs train/loss every step and, from the first validation on, a val/score column."""

    def training_step(self, batch, batch_idx):
        loss = self.step(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/score", self.step(batch))


class SignalAt(L.Callback):
    """Stands in for the scheduler: the preemption callback 'receives' SIGTERM during step `step`."""

    def __init__(self, preemption: PreemptionCheckpoint, step: int) -> None:
        self.preemption, self.step = preemption, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.preemption._record(signal.SIGTERM, None)


class CtrlCAt(L.Callback):
    """Ctrl-C during step `step`: Lightning stops without a checkpoint of that step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def fit(
    run_dir: Path,
    max_steps: int,
    signal_at: int | None = None,
    ckpt_path: str | None = None,
    val_every=None,
    ctrl_c_at: int | None = None,
    every_n_steps: int = 100,
):
    """One fit with the callbacks of conf/callbacks/default.yaml (as composed), our logger and checkpoint IO."""
    cfg = compose_train([f"paths.run_dir={run_dir}", f"callbacks.model_checkpoint.every_n_train_steps={every_n_steps}"])
    model_checkpoint = instantiate(cfg.callbacks.model_checkpoint)
    preemption = PreemptionCheckpoint(str(run_dir / "checkpoints" / "last.ckpt"))
    callbacks = [model_checkpoint, preemption]
    if signal_at is not None:
        callbacks.insert(0, SignalAt(preemption, signal_at))
    if ctrl_c_at is not None:
        callbacks.insert(0, CtrlCAt(ctrl_c_at))
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_steps=max_steps,
        callbacks=callbacks,
        logger=ResumingCSVLogger(save_dir=str(run_dir), name="", version=""),
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=1,
        val_check_interval=val_every,
        limit_val_batches=1 if val_every else 0,
        check_val_every_n_epoch=None if val_every else 1,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    torch.manual_seed(0)
    trainer.fit(LoggingModel(), ckpt_path=ckpt_path, weights_only=True)


def metric_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def test_resume_after_a_preemption_before_any_periodic_checkpoint_writes_last_ckpt(tmp_path):
    """Finding 3: the resumed run used to leave its final weights in last-v1.ckpt and the stale last.ckpt."""
    with pytest.raises(SystemExit):
        fit(tmp_path, max_steps=8, signal_at=3)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert step_of(last) == 3
    fit(tmp_path, max_steps=8, ckpt_path=str(last))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]
    assert step_of(last) == 8


def test_metrics_csv_keeps_history_and_val_columns_across_a_resume(tmp_path):
    """Finding 4: a resume after validation logged val/* crashed and truncated metrics.csv."""
    with pytest.raises(SystemExit):
        fit(tmp_path, max_steps=8, signal_at=5, val_every=2)
    before = metric_rows(tmp_path)
    assert any(row["val/score"] for row in before)
    fit(tmp_path, max_steps=8, ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt"), val_every=2)
    rows = metric_rows(tmp_path)
    train_steps = [int(row["step"]) for row in rows if row["train/loss"]]
    assert train_steps == list(range(8))
    assert [row for row in rows if int(row["step"]) < 5] == [row for row in before if int(row["step"]) < 5]
    assert sum(bool(row["val/score"]) for row in rows) == 4
    assert not list(tmp_path.glob("*.partial"))


def test_a_ctrl_c_resume_from_the_periodic_checkpoint_logs_each_step_once(tmp_path):
    """Finding 4: after Ctrl-C the resumed run repeated the steps logged after its checkpoint."""
    with pytest.raises(SystemExit):  # Lightning's graceful stop on Ctrl-C ends in exit(1)
        fit(tmp_path, max_steps=8, ctrl_c_at=6, every_n_steps=2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert step_of(last) == 4
    logged = [int(row["step"]) for row in metric_rows(tmp_path)]
    assert logged == list(range(len(logged))) and len(logged) > 4  # rows past the checkpoint (step 4)
    fit(tmp_path, max_steps=8, ckpt_path=str(last), every_n_steps=2)
    assert [int(row["step"]) for row in metric_rows(tmp_path)] == list(range(8))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())[-1] == "last.ckpt"


def test_metrics_csv_merge_waits_for_a_save_that_has_rows(tmp_path):
    """Lightning's first save often has nothing buffered; the merge must still happen on the next one."""
    (tmp_path / "metrics.csv").write_text("step,train/loss,val/score\n0,1.0,\n1,0.9,0.5\n2,0.8,\n3,0.7,\n")
    writer = ResumingCSVLogger(save_dir=str(tmp_path), name="", version="").experiment
    writer.save()
    writer.log_metrics({"train/loss": 0.75}, step=2)
    writer.log_metrics({"train/loss": 0.65, "lr": 0.1}, step=3)
    writer.save()
    writer.log_metrics({"train/loss": 0.6, "val/other": 1.0}, step=4)
    writer.save()
    rows = metric_rows(tmp_path)
    assert [(r["step"], r["train/loss"]) for r in rows] == [
        ("0", "1.0"),
        ("1", "0.9"),
        ("2", "0.75"),
        ("3", "0.65"),
        ("4", "0.6"),
    ]
    assert rows[1]["val/score"] == "0.5" and rows[4]["val/other"] == "1.0" and rows[3]["lr"] == "0.1"


def test_a_failed_checkpoint_write_leaves_the_previous_one_and_no_temp_file(tmp_path, monkeypatch):
    """Finding 5: the previous good last.ckpt must survive a write that dies half-way."""
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"global_step": 1, "w": torch.ones(3)}, target)
    before = target.read_bytes()

    def dies_half_way(obj, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr("lightning_modules.checkpoint_io.torch.save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_damaged_resume_checkpoint_is_named_with_what_to_do(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(100)}}, path)
    data = path.read_bytes()
    for damaged in (b"", data[: len(data) // 2]):
        path.write_bytes(damaged)
        with pytest.raises(CheckpointError, match=f"cannot resume from {path}.*delete it"):
            check_resumable(str(path), trust=False)


def test_a_resume_checkpoint_with_code_in_its_pickle_is_refused(tmp_path):
    """Finding 2: resume must not depend on the installed torch's weights_only default."""
    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to run its code"):
        check_resumable(str(path), trust=False)
    assert not marker.exists()


def test_dependency_floors_load_checkpoints_safely():
    """torch < 2.6 defaults to weights_only=False; Lightning < 2.6 has no weights_only for fit."""
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch>=2.6" in dependencies and "lightning>=2.6" in dependencies


def test_a_second_run_in_the_same_directory_is_refused_in_one_line(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError) as refused:
            RunLock(tmp_path).acquire()
        message = str(refused.value)
        assert "\n" not in message and str(os.getpid()) in message and "run_name" in message
    assert not list(tmp_path.iterdir())


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".run.lock").write_text(f"{socket.gethostname()} {int(dead.stdout)}\n")
    lock = RunLock(tmp_path)
    lock.acquire()
    assert (tmp_path / ".run.lock").read_text().split()[1] == str(os.getpid())
    lock.release()


def test_a_fresh_start_clears_what_an_earlier_attempt_left(tmp_path):
    cfg = compose_train([f"paths.output_root={tmp_path}", "run_name=r", f"paths.run_dir={tmp_path}/r/stage1"])
    stage_dir = stage_dir_of(cfg)
    (stage_dir.checkpoint_dir).mkdir(parents=True)
    for name in ("checkpoints/last.ckpt", "checkpoints/step000100.ckpt", "metrics.csv", "summary.json"):
        (stage_dir.path / name).write_text("old")
    (stage_dir.path / "config.yaml").write_text("old: true\n")
    (stage_dir.path / "skipped_media.txt").write_text("")
    (stage_dir.path / ".run.lock").write_text("this process\n")
    clear_for_fresh_start(stage_dir)
    # The config goes too: until this run's set-up succeeds, nothing there describes a run.
    assert sorted(p.name for p in stage_dir.path.iterdir()) == [".run.lock"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.num_query=0", "model.num_query=0"),
        ("data.batch_size=0", "data.batch_size=0"),
        ("optimizer.lr=-1", "optimizer.lr=-1"),
        ("data.num_frames=0", "data.num_frames=0"),
        ("trainer.max_steps=-1", "trainer.max_steps=-1"),
    ],
)
def test_an_invalid_value_is_one_line_naming_the_key_and_writes_nothing(tmp_path, override, key):
    """Finding 10: config.yaml was written first, so the corrected command was refused as another run."""
    run = [f"paths.output_root={tmp_path}", "run_name=r", f"paths.run_dir={tmp_path}/r/stage1"]
    cfg = compose_train([*run, override])
    with pytest.raises(ValueError) as invalid:
        train(cfg)
    assert str(invalid.value).startswith(key) and "\n" not in str(invalid.value)
    assert not (tmp_path / "r").exists()
    validate(compose_train(run))


def test_train_refuses_a_run_name_another_process_is_training(tmp_path):
    """Finding 3: two concurrent runs of one run_name wrote into one checkpoints/ directory."""
    run = [f"paths.output_root={tmp_path}", "run_name=r", f"paths.run_dir={tmp_path}/r/stage1"]
    with RunLock(tmp_path / "r" / "stage1"):
        with pytest.raises(RunLockedError, match="is in use by process"):
            train(compose_train(run))
        assert sorted(p.name for p in (tmp_path / "r" / "stage1").iterdir()) == [".run.lock"]


def test_a_requeued_slurm_job_takes_over_its_own_lock_from_another_node(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    (tmp_path / ".run.lock").write_text("some-other-node 123 4242\n")
    with RunLock(tmp_path):
        assert (tmp_path / ".run.lock").read_text().split() == [socket.gethostname(), str(os.getpid()), "4242"]
    (tmp_path / ".run.lock").write_text("some-other-node 123 999\n")
    with pytest.raises(RunLockedError, match="process 123 on some-other-node"):
        RunLock(tmp_path).acquire()


def test_a_summary_cut_by_a_kill_counts_as_unfinished(tmp_path):
    cfg = compose_train([f"paths.output_root={tmp_path}", "run_name=r", f"paths.run_dir={tmp_path}/r/stage1"])
    stage_dir = stage_dir_of(cfg)
    stage_dir.path.mkdir(parents=True)
    stage_dir.summary.write_text('{"finished": true, "steps": 3, "met')
    assert stage_dir.finished_summary() is None
    stage_dir.summary.write_text('{"finished": true, "metrics": {}}')
    assert stage_dir.finished_summary() == {"finished": True, "metrics": {}}


class FailingSetUp(L.LightningDataModule):
    """Set-up that fails as a bad data root or a malformed annotation file does: inside `fit`."""

    def setup(self, stage: str) -> None:
        raise FileNotFoundError("no annotations under /data/missing")


def test_run_records_are_written_only_once_set_up_succeeded(tmp_path):
    calls = []
    record = RunRecords(lambda: calls.append(trainer.global_step))
    trainer = L.Trainer(
        default_root_dir=tmp_path, max_steps=2, callbacks=[record], logger=False, enable_progress_bar=False
    )
    with pytest.raises(FileNotFoundError):
        trainer.fit(BoringModel(), datamodule=FailingSetUp())
    assert calls == []
    trainer = L.Trainer(
        default_root_dir=tmp_path, max_steps=2, callbacks=[record], logger=False, enable_progress_bar=False
    )
    trainer.fit(BoringModel())
    assert calls == [0]  # once, before the first step


def task_config(overrides: list[str]):
    """The config train.py's task function gets: composed, without Hydra's own node."""
    cfg = compose_train(overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def finished_stage(tmp_path: Path, *overrides: str, steps: int = 150):
    """A stage-1 directory as a finished run leaves it: resolved config.yaml, last.ckpt, summary.json."""
    run = [f"paths.output_root={tmp_path}", "run_name=r", f"paths.run_dir={tmp_path}/r/stage1"]
    cfg = task_config([*run, f"trainer.max_steps={steps}", *overrides])
    stage_dir = stage_dir_of(cfg)
    stage_dir.checkpoint_dir.mkdir(parents=True)
    stage_dir.last_checkpoint.write_text("weights")
    stage_dir.config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    stage_dir.summary.write_text(f'{{"finished": true, "steps": {steps}, "max_steps": {steps}, "metrics": {{}}}}')
    return run, stage_dir


def check(run: list[str], stage_dir, *overrides: str) -> None:
    raw = task_config([*run, *overrides])
    cfg = copy.deepcopy(raw)
    OmegaConf.resolve(cfg)
    check_same_run(stage_dir, cfg, raw)


def test_a_finished_run_may_be_trained_further_but_not_shorter(tmp_path):
    run, stage_dir = finished_stage(tmp_path)
    check(run, stage_dir, "trainer.max_steps=150")
    # Stage 1 validates at ${trainer.max_steps}: what follows the raised limit is not another configuration.
    check(run, stage_dir, "trainer.max_steps=400")
    with pytest.raises(ValueError, match=r"\(trainer.val_check_interval: 150 there, 100 now\)"):
        check(run, stage_dir, "trainer.max_steps=400", "trainer.val_check_interval=100")
    with pytest.raises(ValueError, match=r"\(optimizer.lr: "):
        check(run, stage_dir, "trainer.max_steps=400", "optimizer.lr=1")
    with pytest.raises(ValueError) as shorter:
        check(run, stage_dir, "trainer.max_steps=100")
    message = str(shorter.value)
    assert message.startswith("trainer.max_steps=100: ") and "trained towards 150 steps" in message
    assert "\n" not in message


def test_a_directory_with_nothing_to_resume_does_not_hold_its_config_against_a_new_start(tmp_path):
    """A start that stopped before its first checkpoint is started over anyway, so it refuses nothing."""
    run, stage_dir = finished_stage(tmp_path)
    with pytest.raises(ValueError, match="another configuration"):
        check(run, stage_dir, "optimizer.lr=1")
    stage_dir.last_checkpoint.unlink()
    stage_dir.summary.unlink()
    check(run, stage_dir, "optimizer.lr=1")


def test_a_finished_run_is_trained_further_only_when_asked_for_more_steps():
    cfg = compose_train(["trainer.max_steps=300"])
    assert trained_further({"finished": True, "steps": 150, "max_steps": 150}, cfg)
    assert not trained_further({"finished": True, "steps": 300, "max_steps": 300}, cfg)
    # Stopped by its epochs before its max_steps: the same command is still finished.
    assert not trained_further({"finished": True, "steps": 120, "max_steps": 300}, cfg)
    assert trained_further({"finished": True, "steps": 150}, cfg)  # a summary from before max_steps was recorded


def test_the_paper_recipes_train_by_epochs_with_max_steps_minus_one():
    """Their trainer.max_steps=-1 with max_epochs=3 is Lightning's 'no step limit'; -1 alone is still refused."""
    paper = compose_train(["experiment=videochat2_vicuna7b_stage3", "paths.pretrained=/data/ckpt"])
    assert (paper.trainer.max_steps, paper.trainer.max_epochs) == (-1, 3)
    validate(paper)
    with pytest.raises(ValueError, match=r"^trainer.max_steps=-1: must be at least 1"):
        validate(compose_train(["trainer.max_steps=-1"]))
    by_epochs = compose_train(["trainer.max_steps=-1"])
    assert not trained_further({"finished": True, "steps": 900, "max_steps": -1}, by_epochs)
    assert trained_further({"finished": True, "steps": 300, "max_steps": 300}, by_epochs)
