"""The sweep table: one row per job, from the files the jobs and their evaluations left."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from videochat2.sweep import main, summarize, write_summary


def job(stage: Path, name: str, num_query: int, summary: dict | None = None, trained: bool = True) -> Path:
    path = stage / name
    (path / ".hydra").mkdir(parents=True)
    overrides = ["stage=3", f"model.num_query={num_query}", "run_name=r"]
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    if trained:
        (path / "checkpoints").mkdir()
        (path / "checkpoints" / "last.ckpt").write_bytes(b"weights" * num_query)
    return path


def evaluation(run: Path, folder: str, checkpoint: Path, avg: float, fresh: bool = True) -> None:
    stat = checkpoint.stat()
    recorded = str(checkpoint.relative_to(run.parent))
    fingerprint = [recorded, stat.st_size, stat.st_mtime_ns if fresh else stat.st_mtime_ns - 1]
    results = {"avg": avg, "tasks": {}, "settings": {"checkpoint": recorded, "init_from": [["x"], fingerprint]}}
    (run / "eval" / folder).mkdir(parents=True)
    (run / "eval" / folder / "results.json").write_text(json.dumps(results))


def finished(steps: int, loss: float) -> dict:
    return {"finished": True, "steps": steps, "wall_time_s": 12.5, "metrics": {"train/loss": loss}}


@pytest.fixture
def sweep(tmp_path) -> Path:
    run = tmp_path / "outputs" / "r"
    stage = run / "stage3"
    job(stage, "0", 32, finished(5, 1.25))
    one = job(stage, "1", 64, finished(5, 0.75))
    job(stage, "2", 96, None, trained=False)
    job(stage, "10", 128, finished(3, 2.0))
    (stage / "checkpoints").mkdir()  # the plain stage's own files are not a job
    (stage / "checkpoints" / "last.ckpt").write_bytes(b"plain")
    evaluation(run, "synthetic-job-1", one / "checkpoints" / "last.ckpt", 41.5)
    evaluation(run, "synthetic-job-1-blind", one / "checkpoints" / "last.ckpt", 30.0, fresh=False)
    evaluation(run, "synthetic", stage / "checkpoints" / "last.ckpt", 20.0)
    return stage


def test_one_row_per_job_with_swept_overrides_summary_and_matched_evaluations(sweep, capsys):
    assert [row.job for row in summarize(sweep)] == ["0", "1", "2", "10"]
    assert main([str(sweep)]) == 0
    with open(sweep / "sweep_summary.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows == [
        [
            "job",
            "model.num_query",
            "finished",
            "steps",
            "wall_time_s",
            "train/loss",
            "eval synthetic",
            "eval synthetic-blind",
        ],
        ["0", "32", "yes", "5", "12.5", "1.25", "", ""],
        ["1", "64", "yes", "5", "12.5", "0.75", "41.5", "stale"],
        ["2", "96", "no", "", "", "", "", ""],
        ["10", "128", "yes", "3", "12.5", "2", "", ""],
    ]
    markdown = (sweep / "sweep_summary.md").read_text()
    assert markdown.startswith("Overrides of every job: `stage=3` `run_name=r`\n")
    assert "| 1 | 64 | yes | 5 | 12.5 | 0.75 | 41.5 | stale |" in markdown
    assert markdown in capsys.readouterr().out


def test_a_job_without_recorded_overrides_shows_every_key(sweep):
    (sweep / "0" / ".hydra" / "overrides.yaml").unlink()
    text = write_summary(sweep)
    assert "Overrides of every job" not in text
    assert text.splitlines()[0].startswith("| job | stage | model.num_query | run_name | finished")
    assert "| 0 | ? | ? | ? | yes |" in text


def test_not_a_sweep_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "r" / "stage3").mkdir(parents=True)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "r" / "stage3")])
    assert "no sweep jobs below it" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "r")])
    assert "expected a stage directory of a run" in capsys.readouterr().err
