"""VideoChat2 in plain PyTorch / transformers: video encoder -> Q-Former -> LLM.

The library never imports Lightning or Hydra; the training glue lives in the
top-level `lightning_modules`, `datamodules` and `recipes` packages.
"""

__version__ = "0.1.0"
