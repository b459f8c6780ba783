"""Train one stage: `python train.py [stage=1|2|3] [overrides]` (see README.md and conf/train.yaml)."""

import sys

import hydra
from omegaconf import DictConfig

from recipes.cli import quiet_framework_tips, quote_stage_overrides, user_errors
from recipes.schema import register
from recipes.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with user_errors("train.py"):
        return train(cfg).get("train/loss")


if __name__ == "__main__":
    register()
    quiet_framework_tips()
    sys.argv = quote_stage_overrides(sys.argv)
    main()
