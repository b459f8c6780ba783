"""A run killed with SIGTERM resumes with the same command and ends where an uninterrupted run ends."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, run_script, train_overrides
from videochat2.checkpoints import read_checkpoint

# Every test here trains or loads a trained run: the fast lane (`make test-fast`) leaves them out.
pytestmark = pytest.mark.slow

STEPS = 12


def overrides(dirs: dict[str, Path], run: str) -> list[str]:
    # One batch per epoch: every step ends an epoch, so resuming does not depend on the data sampler
    # restarting mid-epoch. Periodic checkpoints are rare, so the resumed one is the signal's.
    return [
        *train_overrides(dirs, run=run, steps=STEPS),
        "trainer.limit_train_batches=1",
        "callbacks.model_checkpoint.every_n_train_steps=4",
        "trainer.limit_val_batches=0",
    ]


def logged_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]


def trainable(run_dir: Path) -> dict[str, torch.Tensor]:
    state, _ = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    return state


def test_sigterm_mid_run_then_same_command_matches_an_uninterrupted_run(dirs):
    run_script("train.py", *overrides(dirs, "whole"))
    run_dir = dirs["out"] / "killed" / "stage1"
    last = run_dir / "checkpoints" / "last.ckpt"
    args = [sys.executable, "train.py", *overrides(dirs, "killed")]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "saved checkpoint on SIGTERM" in output
    assert not (run_dir / "summary.json").exists()
    stopped_at = torch.load(last, weights_only=True)["global_step"]
    assert 4 <= stopped_at < STEPS
    assert logged_steps(run_dir) == list(range(stopped_at))

    run_script("train.py", *overrides(dirs, "killed"))
    assert logged_steps(run_dir) == list(range(STEPS))
    whole, resumed = trainable(dirs["out"] / "whole" / "stage1"), trainable(run_dir)
    assert whole.keys() == resumed.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=1e-4, atol=1e-5, msg=key)
