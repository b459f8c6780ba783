"""Trackers and progress: logger presets, tracker run ids, the progress line, settings a resume may change."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lightning_modules.progress import format_duration, progress_line
from recipes.schema import run_id
from recipes.train import config_difference
from tests.unit.test_configs import compose_train


@pytest.mark.parametrize(
    ("preset", "loggers"),
    [
        ("csv", ["csv"]),
        ("tensorboard", ["csv", "tensorboard"]),
        ("wandb", ["csv", "wandb"]),
        ("mlflow", ["csv", "mlflow"]),
        ("many", ["csv", "tensorboard", "wandb"]),
    ],
)
def test_every_logger_preset_keeps_metrics_csv(preset, loggers):
    cfg = compose_train([f"logger={preset}"])
    assert list(cfg.logger) == loggers
    if "wandb" in loggers:
        assert cfg.logger.wandb.offline is True and cfg.logger.wandb.resume == "allow"


def test_tracker_run_id_follows_the_run_directory_not_the_time():
    assert run_id("outputs/default/stage3", "outputs") == "default-stage3"
    assert run_id("outputs/default/stage3/1", "outputs") == "default-stage3-1"
    assert run_id("/scratch/o/r/stage1", "/scratch/o") == "r-stage1"


def test_progress_line_names_step_losses_rate_throughput_and_eta():
    metrics = {"train/loss": 1.23456, "train/loss_vtc": 0.5, "val/r1_t2v": 10.0}
    line = progress_line(120, 300, metrics, 1e-4, 12.34, 200)
    assert line == "step 120/300 | train/loss 1.235 train/loss_vtc 0.5 | lr 1.0e-04 | 12.3 samples/s | ETA 3m20s"
    assert progress_line(1, 10, {}, None, 0.0, 0).startswith("step 1/10 | loss - | 0.0 samples/s")


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (45.4, "45s"), (200, "3m20s"), (3725, "1h02m")])
def test_durations_are_short(seconds, text):
    assert format_duration(seconds) == text


def test_a_resume_may_change_the_trackers_but_not_the_model():
    saved = OmegaConf.create({"logger": {"csv": {"save_dir": "x"}}, "model": {"num_query": 32}})
    with_trackers = OmegaConf.create(
        {"logger": {"csv": {"save_dir": "x"}, "wandb": {"offline": True}}, "model": {"num_query": 32}}
    )
    assert config_difference(saved, with_trackers) is None
    other_model = OmegaConf.create({"logger": {"csv": {"save_dir": "x"}}, "model": {"num_query": 64}})
    assert "model.num_query" in config_difference(saved, other_model)
