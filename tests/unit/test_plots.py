"""Training curves from metrics.csv and the comparison of evaluation variants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from videochat2.plots import curve_panels, main, plot_run, plot_variants, read_metrics, read_variants

METRICS = """data/skipped,epoch,lr-AdamW/pg1,step,train/loss,train/loss_vtc,val/r1_t2v
,,1e-05,0,,,
0.0,0,,0,7.7,1.38,
0.0,0,2e-05,1,7.1,1.30,
,0,,1,,,12.5
"""


def write_run(root: Path) -> Path:
    for stage in ("stage1", "stage2/0"):
        (root / "r" / stage).mkdir(parents=True)
        (root / "r" / stage / "metrics.csv").write_text(METRICS)
    return root / "r"


def test_metrics_are_read_per_column_with_empty_cells_skipped(tmp_path):
    series = read_metrics(write_run(tmp_path) / "stage1" / "metrics.csv")
    assert series["train/loss"] == [(0, 7.7), (1, 7.1)]
    assert series["lr-AdamW/pg1"] == [(0, 1e-05), (1, 2e-05)]
    assert series["val/r1_t2v"] == [(1, 12.5)]
    assert curve_panels(series) == {
        "loss": ["train/loss", "train/loss_vtc"],
        "learning rate": ["lr-AdamW/pg1"],
        "validation": ["val/r1_t2v"],
    }


def test_every_stage_and_sweep_job_of_a_run_gets_its_curves(tmp_path, capsys):
    run = write_run(tmp_path)
    assert main([str(run)]) == 0
    for stage in ("stage1", "stage2/0"):
        image = Image.open(run / stage / "curves.png")
        assert image.size[0] > 1000  # three panels side by side
    assert "curves.png" in capsys.readouterr().out


def test_a_directory_without_metrics_is_an_error(tmp_path):
    assert plot_run(tmp_path) == []
    with pytest.raises(SystemExit):
        main([str(tmp_path)])


def write_eval(eval_dir: Path, name: str, accuracy: float) -> None:
    (eval_dir / name).mkdir(parents=True)
    results = {"tasks": {"a": {"acc": accuracy}, "b": {"acc": accuracy / 2}}, "avg": accuracy * 0.75}
    (eval_dir / name / "results.json").write_text(json.dumps(results))


def test_variants_of_one_benchmark_are_compared_and_others_left_out(tmp_path):
    write_eval(tmp_path, "synthetic", 60.0)
    write_eval(tmp_path, "synthetic-blind", 30.0)
    write_eval(tmp_path, "synthetic-1f", 40.0)
    write_eval(tmp_path, "synthetic_other", 10.0)
    (tmp_path / "retrieval").mkdir()
    (tmp_path / "retrieval" / "results.json").write_text(json.dumps({"r1_t2v": 5.0}))
    assert set(read_variants(tmp_path, "synthetic")) == {"full", "blind", "1f"}
    out = plot_variants(tmp_path, "synthetic", "synthetic of run r")
    assert out == tmp_path / "synthetic-variants.png" and out.is_file()


def test_one_variant_alone_draws_no_comparison(tmp_path):
    write_eval(tmp_path, "synthetic", 60.0)
    assert plot_variants(tmp_path, "synthetic", "t") is None
    assert not (tmp_path / "synthetic-variants.png").exists()
