"""The run layout: which checkpoints make up a stage's model, for plain runs, sweep jobs and moved runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from videochat2.models.alignment import AlignmentConfig
from videochat2.models.qformer import QFormerConfig
from videochat2.models.vision import VisionConfig
from videochat2.run_layout import RunLayout, RunLayoutError, StageDir, init_chain, locate
from videochat2.spec import MediaConfig, ModelSpec


def spec() -> ModelSpec:
    return ModelSpec(
        stage=1,
        vision=VisionConfig.tiny(),
        qformer=QFormerConfig.tiny(),
        qformer_tokenizer="tok",
        media=MediaConfig(),
        alignment=AlignmentConfig(),
    )


def trained(layout: RunLayout, stage: int, job: str | None = None, init_from: list[Path] = ()) -> Path:
    """A stage directory as training leaves it: its spec (with the chain it started from) and a checkpoint."""
    stage_dir = layout.stage(stage, job)
    stage_dir.write_spec(spec(), init_from)
    stage_dir.checkpoint_dir.mkdir(parents=True)
    stage_dir.last_checkpoint.write_bytes(b"weights")
    return stage_dir.last_checkpoint


def test_auto_chains_the_earlier_stages_of_the_run_oldest_first(tmp_path):
    layout = RunLayout(tmp_path, "r")
    one, two = trained(layout, 1), trained(layout, 2)
    assert layout.auto_chain(3) == [one, two]
    assert layout.auto_chain(1) == []


def test_a_sweep_job_chains_its_own_earlier_job_else_the_plain_stage(tmp_path):
    layout = RunLayout(tmp_path, "r")
    one, two, two_job = trained(layout, 1), trained(layout, 2), trained(layout, 2, "0")
    assert layout.auto_chain(3, "0") == [one, two_job]
    assert layout.auto_chain(3, "1") == [one, two]


def test_a_sweep_job_is_loaded_with_the_chain_it_recorded(tmp_path):
    """The job directory `stage3/0` is not the run root: its earlier stages are not dropped."""
    layout = RunLayout(tmp_path, "r")
    chain = [trained(layout, 1), trained(layout, 2)]
    own = trained(layout, 3, "0", init_from=chain)
    job = locate(tmp_path / "r" / "stage3" / "0")
    assert (job.stage, job.job, job.run.root) == (3, Path("0"), tmp_path / "r")
    assert job.checkpoints() == [*chain, own]


def test_the_recorded_chain_follows_a_moved_output_root(tmp_path):
    layout = RunLayout(tmp_path / "a", "r")
    trained(layout, 3, init_from=[trained(layout, 1), trained(layout, 2)])
    (tmp_path / "a").rename(tmp_path / "b")
    moved = locate(tmp_path / "b" / "r" / "stage3")
    assert moved.checkpoints() == [tmp_path / "b" / "r" / f"stage{s}" / "checkpoints" / "last.ckpt" for s in (1, 2, 3)]


def test_only_sweep_jobs_are_never_guessed_between(tmp_path):
    layout = RunLayout(tmp_path, "r")
    trained(layout, 3, "0")
    trained(layout, 3, "1")
    with pytest.raises(RunLayoutError, match="only sweep jobs .*stage3/0.*name one"):
        layout.trained(3)
    assert layout.trained(3, "1").path == tmp_path / "r" / "stage3" / "1"


def test_a_missing_previous_stage_names_the_command_to_run(tmp_path):
    with pytest.raises(RunLayoutError, match="python train.py stage=2 run_name=r"):
        RunLayout(tmp_path, "r").auto_chain(3)


def test_a_sweep_directory_outside_the_run_chains_the_plain_stages(tmp_path):
    layout = RunLayout(tmp_path / "out", "r")
    one = trained(layout, 1)
    elsewhere = StageDir(tmp_path / "sweeps" / "0", 2, layout)
    assert elsewhere.job is None
    assert init_chain("auto", elsewhere) == [one]


def test_init_from_a_stage_directory_brings_its_chain(tmp_path):
    layout = RunLayout(tmp_path, "r")
    chain = [trained(layout, 1), trained(layout, 2)]
    own = trained(layout, 3, init_from=chain)
    target = RunLayout(tmp_path, "other").stage(3)
    assert init_chain(str(tmp_path / "r" / "stage3"), target) == [*chain, own]
    assert init_chain(str(own), target) == [own]
    assert init_chain("none", target) == []
