"""Every command line the README documents composes, with the values it promises."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from recipes.cli import quote_stage_overrides

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_train(overrides: list[str], config_name: str = "train"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=quote_stage_overrides(overrides), return_hydra_config=True)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The per-job override lists Hydra's basic sweeper makes from a `-m` command line."""
    parsed = OverridesParser.create().parse_overrides(quote_stage_overrides(overrides))
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def test_quote_stage_overrides():
    assert quote_stage_overrides(["stage=2", "model.num_query=64"]) == ["stage='2'", "model.num_query=64"]
    assert quote_stage_overrides(["stage=1,2"]) == ["stage='1','2'"]
    assert quote_stage_overrides(["x.stage=2", "stage=s"]) == ["x.stage=2", "stage=s"]


def test_default_is_stage_1():
    cfg = compose_train([])
    assert cfg.stage == 1
    assert cfg.model.num_query == 32
    assert cfg.module._target_ == "lightning_modules.AlignmentModule"
    assert cfg.hydra.run.dir == "outputs/default/stage1"


def test_stage_2_with_num_query():
    cfg = compose_train(["stage=2", "model.num_query=64"])
    assert cfg.stage == 2
    assert cfg.model.num_query == 64
    assert cfg.hydra.run.dir == "outputs/default/stage2"


def test_paths_move_outputs_and_data():
    cfg = compose_train(["paths.output_root=/tmp/o", "paths.data_dir=/tmp/d", "run_name=r"])
    assert cfg.hydra.run.dir == "/tmp/o/r/stage1"
    assert cfg.data.root == "/tmp/d/synthetic"


def test_stage_sweep_expands_to_two_jobs():
    jobs = sweep_jobs(["stage=1,2"])
    assert len(jobs) == 2
    stages = [compose_train(job).stage for job in jobs]
    assert stages == [1, 2]


def test_every_composed_config_resolves_except_runtime_paths():
    cfg = compose_train(["stage=2", "model.num_query=64"])
    cfg.paths.run_dir = "/tmp/run"
    with open_dict(cfg):
        del cfg["hydra"]
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["module"]["_target_"]
