"""Pre-flight: every missing input of a recipe in one error, before anything is built or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recipes.evaluate import evaluate
from recipes.preflight import check, training_missing
from recipes.train import model_spec, stage_dir_of, train
from tests.unit.test_configs import compose_train


def run_args(tmp_path: Path, stage: int = 1) -> list[str]:
    return [
        f"stage={stage}",
        f"paths.output_root={tmp_path / 'outputs'}",
        f"paths.data_dir={tmp_path / 'data'}",
        "run_name=r",
        f"paths.run_dir={tmp_path / 'outputs' / 'r' / f'stage{stage}'}",
    ]


def test_three_missing_inputs_are_named_in_one_error_before_anything_is_written(tmp_path):
    missing = tmp_path / "missing"
    corpus = (
        f"data.corpora.instruction=[{{name: clips, annotation: {missing}/train.json, "
        f"media_root: {missing}/videos, media_type: video}}]"
    )
    cfg = compose_train(
        [
            *run_args(tmp_path, 3),
            f"model.init_from={missing}/stage2.pth",
            f"model.qformer_tokenizer={missing}/bert",
            corpus,
        ]
    )
    with pytest.raises(ValueError) as stopped:
        train(cfg)
    message = str(stopped.value)
    assert message.splitlines()[0] == "4 inputs are missing:"
    assert f"  - Q-Former tokenizer (model.qformer_tokenizer): {missing}/bert" in message.splitlines()
    assert f"  - checkpoint of model.init_from: {missing}/stage2.pth" in message.splitlines()
    assert f"  - annotation file of corpus clips (data.corpora.instruction): {missing}/train.json" in message
    assert f"  - media root of corpus clips (data.corpora.instruction): {missing}/videos" in message
    assert not (tmp_path / "outputs").exists()  # stopped before the run lock, the data and the model


def test_what_the_embedded_default_builds_on_first_use_is_not_required_yet(tmp_path):
    cfg = compose_train(run_args(tmp_path, 1))
    OmegaConf.resolve(cfg)
    assert training_missing(cfg, stage_dir_of(cfg), model_spec(cfg)) == []
    # Not built on first use: a real data preset's files are required.
    cfg.data.synthetic = None
    missing = training_missing(cfg, stage_dir_of(cfg), model_spec(cfg))
    assert any("annotation file of corpus synthetic_video (data.corpora.caption)" in m for m in missing)
    assert any("annotation file of corpus synthetic_retrieval (data.corpora.retrieval)" in m for m in missing)
    assert any(m.startswith("Q-Former tokenizer (model.qformer_tokenizer)") for m in missing)


def test_a_missing_earlier_stage_and_llm_are_listed_together(tmp_path):
    cfg = compose_train([*run_args(tmp_path, 2), f"model.llm.path={tmp_path}/no_llm"])
    OmegaConf.resolve(cfg)
    missing = training_missing(cfg, stage_dir_of(cfg), model_spec(cfg))
    assert len(missing) == 2
    assert missing[0].startswith(f"LLM directory {tmp_path}/no_llm is missing (preset 'tiny_llama')")
    assert "python train.py stage=1 run_name=r" in missing[1]


def test_one_missing_input_is_one_line():
    with pytest.raises(ValueError) as stopped:
        check(["benchmark root (benchmark.root): /x"])
    assert str(stopped.value) == "benchmark root (benchmark.root): /x"
    check([])


def test_evaluation_lists_the_benchmark_and_the_model_it_cannot_find(tmp_path):
    cfg = compose_train(
        [f"paths.output_root={tmp_path}", f"benchmark.root={tmp_path}/MVBench", "run_name=r"], config_name="eval"
    )
    with pytest.raises(ValueError) as stopped:
        evaluate(cfg)
    lines = str(stopped.value).splitlines()
    assert lines[0] == "2 inputs are missing:"
    assert lines[1] == f"  - benchmark root (benchmark.root): {tmp_path}/MVBench"
    assert "run 'r'" in lines[2] and "stage" in lines[2]
