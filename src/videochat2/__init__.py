"""VideoChat2 in plain PyTorch / transformers: video encoder -> Q-Former -> LLM.

    from videochat2 import load_model, ChatSession, read_media

The library never imports Lightning or Hydra; the training glue lives in the top-level
`lightning_modules`, `datamodules` and `recipes` packages. The public names load on first use, so that
`import videochat2` stays cheap for the tools that only need a submodule.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import Any

__version__ = "0.1.0"


def _is_cpu_kernel_probe(record: logging.LogRecord) -> bool:
    """bitsandbytes probes the Hub for an optional CPU 4-bit kernel on import (peft imports it even when
    nothing is quantised) and warns when the probe is refused; the fallback it then uses is correct."""
    return not record.getMessage().startswith("Failed to load CPU gemm_4bit_forward")


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_is_cpu_kernel_probe)

PUBLIC = {
    "load_model": "videochat2.loader",
    "LoadedModel": "videochat2.builder",
    "ModelSpec": "videochat2.spec",
    "ChatSession": "videochat2.chat",
    "Choice": "videochat2.chat",
    "VideoChat2Config": "videochat2.hf",
    "VideoChat2ForConditionalGeneration": "videochat2.hf",
    "read_media": "videochat2.data.video",
}
__all__ = [*PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in PUBLIC:
        raise AttributeError(f"module 'videochat2' has no attribute {name!r}")
    return getattr(import_module(PUBLIC[name]), name)
