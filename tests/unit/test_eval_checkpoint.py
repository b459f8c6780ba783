"""What evaluation loads: a checkpoint's own query count (training may extend or cut it; evaluation, chat and
export must not), and a sweep job's evaluation in its own folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from recipes.evaluate import output_dir
from tests.unit.test_trust import CORPUS, tiny_spec, write_checkpoint
from videochat2.builder import build_videochat2
from videochat2.checkpoints import CheckpointError
from videochat2.embedded.tokenizers import train_tokenizers
from videochat2.loader import load_model
from videochat2.models.videochat2 import VideoChat2Config
from videochat2.spec import ModelSpec, write_spec


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tokenizers")
    train_tokenizers(CORPUS, root)
    return root


def with_queries(tokenizers: Path, num_query: int) -> ModelSpec:
    spec = tiny_spec(tokenizers)
    return replace(spec, videochat2=replace(spec.videochat2, num_query=num_query))


@pytest.mark.parametrize(("saved", "built"), [(4, 8), (8, 4), (8, 12)])
def test_loading_for_use_refuses_another_query_count_naming_both(tokenizers, tmp_path, saved, built):
    checkpoint = tmp_path / f"q{saved}.ckpt"
    write_checkpoint(with_queries(tokenizers, saved), checkpoint)
    message = (
        rf"q{saved}.ckpt was trained with {saved} queries but the model built here has {built} \(model.num_query\)"
    )
    with pytest.raises(CheckpointError, match=message):
        load_model([checkpoint], spec=with_queries(tokenizers, built))


def test_same_count_loads_and_a_later_file_without_queries_does_not_count(tokenizers, tmp_path):
    spec = with_queries(tokenizers, 8)
    write_checkpoint(spec, tmp_path / "full.ckpt")
    state = torch.load(tmp_path / "full.ckpt", weights_only=True)["state_dict"]
    lora_only = {k: v for k, v in state.items() if "lora_" in k}
    torch.save({"state_dict": lora_only, "global_step": 1}, tmp_path / "lora.ckpt")
    loaded = load_model([tmp_path / "full.ckpt", tmp_path / "lora.ckpt"], spec=spec)
    assert (loaded.report.queries_loaded, loaded.report.queries_total) == (8, 8)
    assert torch.equal(loaded.model.extra_query_tokens, state["model.extra_query_tokens"])


def test_training_still_extends_queries_with_zeros(tokenizers, tmp_path):
    """Stage 2 from stage 1: a 4-query source fills the first 4 of 8; the extra 4 start at zero."""
    write_checkpoint(with_queries(tokenizers, 4), tmp_path / "q4.ckpt")
    spec = with_queries(tokenizers, 8)
    assert spec.videochat2 == VideoChat2Config(num_query=8, num_base_query=4, qformer_text_input=True)
    loaded = build_videochat2(spec, [tmp_path / "q4.ckpt"], {"extra_query_tokens"}, exact_queries=False)
    assert (loaded.report.queries_loaded, loaded.report.queries_total) == (4, 8)
    assert torch.count_nonzero(loaded.model.extra_query_tokens) == 0


def eval_config(root: Path, init_from: str, tag: str | None = None) -> object:
    return OmegaConf.create(
        {
            "run_name": "r",
            "paths": {"output_root": str(root)},
            "model": {"init_from": init_from},
            "benchmark": {"name": "synthetic", "transform": "ours"},
            "data": {"num_frames": None, "image_size": None},
            "eval": {"tag": tag, "answerer": "letter_logits", "blind": True, "oracle": False},
        }
    )


def test_each_sweep_job_is_evaluated_into_its_own_folder(tokenizers, tmp_path):
    for job in ("stage3/0", "stage3/1", "stage3/ablation_lora/2", "stage3"):
        (tmp_path / "r" / job / "checkpoints").mkdir(parents=True)
        (tmp_path / "r" / job / "checkpoints" / "last.ckpt").touch()
        write_spec(tiny_spec(tokenizers), tmp_path / "r" / job / "model_spec.json", init_from=[])
    eval_root = tmp_path / "r" / "eval"
    job = str(tmp_path / "r" / "stage3" / "1")
    assert output_dir(eval_config(tmp_path, job)) == eval_root / "synthetic-job-1-blind"
    assert output_dir(eval_config(tmp_path, job + "/checkpoints/last.ckpt")) == eval_root / "synthetic-job-1-blind"
    nested = str(tmp_path / "r" / "stage3" / "ablation_lora" / "2")
    assert output_dir(eval_config(tmp_path, nested)) == eval_root / "synthetic-job-ablation_lora-2-blind"
    assert output_dir(eval_config(tmp_path, str(tmp_path / "r" / "stage3"))) == eval_root / "synthetic-blind"
    assert output_dir(eval_config(tmp_path, "auto")) == eval_root / "synthetic-blind"
    assert output_dir(eval_config(tmp_path, job, tag="mine")) == eval_root / "synthetic-mine"
