"""The lmms-eval model `videochat2_lightning`: a trained run or an export of this package, evaluated by lmms-eval.

    pip install -e '.[lmms-eval]'
    lmms-eval --model videochat2_lightning --model_args pretrained=outputs/default --tasks mvbench

lmms-eval (0.7) finds plugin models through the `lmms_eval.models` entry-point group, whose entries must give
a `ModelManifest` (or a callable returning some): `manifests` below, named in pyproject.toml. lmms-eval ships
its own `videochat2` model (the official Hub checkpoints, its own loading code) and lets an entry point
overwrite a built-in name, so this one is registered under a name of its own rather than shadowing that one.
"""

from __future__ import annotations

from lmms_eval.api.model import lmms

from videochat2.integrations.lmms_adapter import LmmsAdapter

MODEL_ID = "videochat2_lightning"


class VideoChat2Lightning(LmmsAdapter, lmms):
    """lmms-eval's base class (rank, world size, cache hook) with the requests answered by `LmmsAdapter`."""


def manifests() -> list:
    """What lmms-eval's registry reads from the entry point: the model id and the class's import path."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.{VideoChat2Lightning.__name__}")]
