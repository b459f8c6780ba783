"""The paper recipes: the original's global batch on any device count, its corpora, its training switches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import open_dict

from recipes.train import settle_global_batch
from tests.unit.test_configs import compose_train

ROOT = Path(__file__).resolve().parents[2]
# recipe -> (global batch of the original: per-GPU batch x 32 GPUs, caption/instruction corpora, count)
RECIPES = {
    "videochat2_stage1": (4096, "caption", 3),
    "videochat2_vicuna7b_stage2": (128, "caption", 7),
    "videochat2_mistral7b_stage2": (512, "caption", 2),
    "videochat2_phi3_stage2": (640, "caption", 2),
    "videochat2_vicuna7b_stage3": (128, "instruction", 36),
    "videochat2_mistral7b_stage3": (128, "instruction", 37),
    "videochat2_phi3_stage3": (256, "instruction", 37),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_states_the_original_global_batch_and_corpora(recipe):
    batch, task, count = RECIPES[recipe]
    cfg = compose_train([f"experiment={recipe}"])
    assert cfg.global_batch_size == batch
    assert len(cfg.data.corpora[task]) == count
    assert all(entry.annotation.startswith(f"{cfg.data.root}/") for entry in cfg.data.corpora[task])
    assert cfg.module.decay_rule == "original"
    if cfg.stage == 3:
        assert cfg.model.bos_quirk is True
        assert cfg.data.time_message is ("vicuna" in recipe)


@pytest.mark.parametrize("devices, nodes, accumulate", [(1, 1, 32), (8, 1, 4), (8, 4, 1)])
def test_the_global_batch_is_reached_on_any_device_count(devices, nodes, accumulate):
    cfg = compose_train(["experiment=videochat2_vicuna7b_stage3", f"trainer.devices={devices}"])
    with open_dict(cfg):
        cfg.trainer.num_nodes = nodes
    line = settle_global_batch(cfg)
    assert cfg.trainer.accumulate_grad_batches == accumulate
    assert line.startswith(f"global batch 128 = {devices} device(s) x {nodes} node(s) x 4 per device x {accumulate}")


def test_a_global_batch_the_devices_cannot_reach_is_refused():
    cfg = compose_train(["experiment=videochat2_phi3_stage2", "trainer.devices=3"])
    with pytest.raises(ValueError, match="not a multiple"):
        settle_global_batch(cfg)


def test_without_a_recipe_the_configured_accumulation_stays():
    cfg = compose_train(["trainer.accumulate_grad_batches=2"])
    assert settle_global_batch(cfg) == "global batch 64 = 1 device(s) x 1 node(s) x 32 per device x 2 accumulated"


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_composes_with_cfg_job(recipe):
    """`python train.py experiment=<recipe> --cfg job` prints the job config a user would run."""
    done = subprocess.run(
        [sys.executable, "train.py", f"experiment={recipe}", "--cfg", "job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    job = yaml.safe_load(done.stdout)
    assert job["global_batch_size"] == RECIPES[recipe][0]
    assert job["trainer"]["max_steps"] == -1


@pytest.mark.parametrize(
    "family, prompt", [("vicuna7b", "vicuna_v0"), ("mistral7b", "mistral_instruct"), ("phi3", "phi3")]
)
def test_mvbench_recipes_use_the_official_frames_for_each_released_model(family, prompt):
    cfg = compose_train([f"eval_recipe=videochat2_{family}_mvbench"], config_name="eval")
    assert (cfg.benchmark.num_frames, cfg.benchmark.transform, cfg.eval.prompt) == (16, "official", prompt)
    assert cfg.model.init_from.endswith("_stage3.pth") and cfg.eval.answerer == "generate"
