"""Build the small synthetic set the GPU tests use, on a machine with PyAV, to carry to a GPU host without it.

python -m tests.gpu.prepare DIR      # then on the GPU host: VIDEOCHAT2_TEST_DATA=DIR pytest tests/gpu
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import train_overrides


def prepare(data_dir: Path) -> Path:
    """`data_dir/synthetic` as the tests' training commands use it: videos, tokenizers and the pretrained tiny LLM.

    What stage 2 prepares on first use, done here, so the GPU host only reads it.
    """
    from datamodules.common import prepare_embedded
    from recipes.train import model_spec
    from tests.unit.test_configs import compose_train

    cfg = compose_train(["stage=2", *train_overrides({"data": data_dir, "out": data_dir / ".unused"})])
    prepare_embedded(cfg.data, model_spec(cfg).llm)
    return data_dir


if __name__ == "__main__":
    print(prepare(Path(sys.argv[1]).resolve()))
