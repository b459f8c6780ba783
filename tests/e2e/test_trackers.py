"""`logger=many` on a real run: TensorBoard events, an offline W&B run with a stable id, the progress line."""

from __future__ import annotations

import pytest

from tests.conftest import run_script, train_overrides

# Every test here trains or loads a trained run: the fast lane (`make test-fast`) leaves them out.
pytestmark = pytest.mark.slow


def test_many_loggers_write_locally_and_the_job_log_shows_progress(dirs):
    overrides = [*train_overrides(dirs, run="trk", steps=4), "logger=many", "callbacks.progress_log.every_n_steps=2"]
    result = run_script("train.py", *overrides)
    run_dir = dirs["out"] / "trk" / "stage1"
    assert (run_dir / "metrics.csv").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run_dir / "tensorboard").glob("hparams.yaml"))
    assert [p.name for p in (run_dir / "wandb").glob("offline-run-*")][0].endswith("-trk-stage1")
    log = result.stdout + result.stderr
    assert "step 2/4 | " in log and "step 4/4 | " in log and "ETA 0s" in log
    assert "Tip" not in log and "gemm_4bit" not in log
    again = run_script("train.py", *train_overrides(dirs, run="trk", steps=4))
    assert "already finished" in again.stdout + again.stderr
