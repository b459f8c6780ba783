"""Evaluate: `python eval.py [benchmark=synthetic|mvbench|videomme|...] [overrides]` (see conf/eval.yaml)."""

import sys

import hydra
from omegaconf import DictConfig

from recipes.cli import quiet_framework_tips, quote_stage_overrides, user_errors
from recipes.evaluate import evaluate
from recipes.schema import register


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    with user_errors("eval.py"):
        return evaluate(cfg).get("avg")


if __name__ == "__main__":
    register()
    quiet_framework_tips()
    sys.argv = quote_stage_overrides(sys.argv)
    main()
