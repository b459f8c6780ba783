"""Training through a real SLURM: `python train.py -m hydra/launcher=slurm trainer=ddp_cpu ...`.

Needs a running cluster (`scripts/ci/slurm_up.sh` starts one on loopback; `.ci/run` does so before the
tests). Each job is 2 tasks forming a gloo DDP group under srun. The first job runs uninterrupted; the
second is requeued mid-run with `scontrol requeue` and must finish from its checkpoint with the same
weights.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, train_overrides
from videochat2.checkpoints import read_checkpoint

STEPS = 8


def cluster_state() -> str | None:
    """None when a job can be submitted, else why not."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH (scripts/ci/slurm_up.sh starts a local cluster)"
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        return "hydra-submitit-launcher is not installed (pip install -e '.[slurm]')"
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout.split()
    if not {"idle", "mixed", "allocated"} & set(states):
        return f"the SLURM daemons are not up (sinfo node states: {states or 'none'})"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(cluster_state() is not None, reason=str(cluster_state()))]


def launch(dirs: dict[str, Path], run: str, name: str) -> subprocess.Popen:
    """The multirun process: it submits the job and returns when the job has finished."""
    args = [
        "-m",
        "hydra/launcher=slurm",
        "trainer=ddp_cpu",
        *train_overrides(dirs, run=run, steps=STEPS),
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=0",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=30",
        f"hydra.launcher.name={name}",
    ]
    return subprocess.Popen(
        [sys.executable, "train.py", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for the launcher; a job that died without a result would keep it waiting, hence the timeout."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as timeout_error:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"the SLURM job did not finish in {timeout} s:\n{output[-3000:]}") from timeout_error
    assert process.returncode == 0, output[-3000:]
    return output


def job_id(name: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout.split()
        if ids:
            return ids[0]
        time.sleep(0.5)
    raise AssertionError(f"no job named {name} appeared in squeue")


def job_log(run_dir: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(run_dir.parent.parent.glob(".submitit/*/*_log.*")))


def trainable(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run_dir / "checkpoints" / "last.ckpt")[0]


@pytest.fixture(scope="module")
def uninterrupted(dirs) -> Path:
    name = f"vc2-{uuid.uuid4().hex[:8]}"
    finish(launch(dirs, "slurm_whole", name))
    return dirs["out"] / "slurm_whole" / "stage1" / "0"


def test_multirun_on_slurm_trains_with_two_ddp_tasks(uninterrupted):
    summary = (uninterrupted / "summary.json").read_text()
    assert '"finished": true' in summary and f'"steps": {STEPS}' in summary
    log = job_log(uninterrupted)
    assert "global_rank=1(2)" in log, log[-3000:]


def test_requeued_job_resumes_from_its_checkpoint_with_the_same_weights(dirs, uninterrupted):
    name = f"vc2-{uuid.uuid4().hex[:8]}"
    run_dir = dirs["out"] / "slurm_requeued" / "stage1" / "0"
    process = launch(dirs, "slurm_requeued", name)
    job = job_id(name)
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    finish(process)

    log = job_log(run_dir)
    assert "saved checkpoint on SIGTERM" in log, log[-3000:]
    restarts = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "Restarts=1" in restarts
    whole, resumed = trainable(uninterrupted), trainable(run_dir)
    assert whole.keys() == resumed.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=1e-4, atol=1e-5, msg=key)


def job_state(job: str) -> str:
    show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return next((f.split("=", 1)[1] for f in show.split() if f.startswith("JobState=")), "UNKNOWN")


def test_sbatch_script_requeues_itself_on_usr1_and_finishes_from_its_checkpoint(dirs, tmp_path):
    """The sbatch recipe: Lightning owns requeue (USR1 as `--signal=USR1@300` would send it, by hand here)."""
    run_dir = dirs["out"] / "sbatch_usr1" / "stage1"
    submit = [
        "sbatch",
        "--parsable",
        "--ntasks-per-node=2",
        "--gpus-per-node=0",
        "--cpus-per-task=1",
        f"--output={tmp_path / 'job-%j.out'}",
        "scripts/slurm/train.sbatch",
        "trainer=ddp_cpu",
        *train_overrides(dirs, run="sbatch_usr1", steps=STEPS),
        "trainer.limit_val_batches=0",
        "callbacks.model_checkpoint.every_n_train_steps=2",
    ]
    env = {**os.environ, "PYTHON": sys.executable}
    job = subprocess.run(submit, cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout.strip()
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)
    deadline = time.monotonic() + 600
    while job_state(job) not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") and time.monotonic() < deadline:
        time.sleep(1)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert job_state(job) == "COMPLETED", log[-3000:]
    assert "saved checkpoint on SIGUSR1" in log and "requeing job" in log, log[-3000:]
    assert "Restarts=1" in subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert f'"steps": {STEPS}' in (run_dir / "summary.json").read_text()
