"""Typed config nodes for the model components, generated from the library's config dataclasses.

`model.vision_encoder`, `model.qformer`, `model.llm` and `model.alignment` accept exactly the fields of
`VisionConfig`, `QFormerConfig`, `LLMConfig` and `AlignmentConfig`, each typed, each null unless set: a
null field keeps the preset's (or the dataclass's) value. So a new component option is one dataclass field,
usable at once as `model.<component>.<field>=...`, and a misspelt key or a wrong type fails at composition
with the key named.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from videochat2.models.alignment import AlignmentConfig
from videochat2.models.llm import LLMConfig
from videochat2.models.qformer import QFormerConfig
from videochat2.models.vision import VisionConfig

COMPONENTS = {"vision_encoder": VisionConfig, "qformer": QFormerConfig, "llm": LLMConfig, "alignment": AlignmentConfig}
# `data.*`: every key a data preset may set, by type. The nested sections (corpora, the synthetic world, streaming,
# the embedded LLM) are left untyped here; their readers check them and name the entry (datamodules.common).
DATA_FIELDS = {
    "root": str,
    "task": str,
    "corpora": Any,
    "synthetic": Any,
    "streaming": Any,
    "embedded_llm": Any,
    "num_frames": int,
    "image_size": int,
    "sample": str,
    "sample_test": str,
    "hflip": bool,
    "crop_scale": list[float],
    "normalization": str,
    "max_txt_len": int,
    "qformer_max_txt_len": int,
    "shuffle_options": bool,
    "batch_size": int,
    "num_workers": int,
    "read_timeout_s": float,
    "max_skip_fraction": float,
    "caption_prompts": str,
    "caption_padding_side": str,
    "caption_mask_pad_id": bool,
    "qformer_padding_side": str,
    "time_message": bool,
}


def node_type(hint: Any) -> Any:
    """The OmegaConf-compatible form of a field's type (unions with None are made optional by the caller)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return node_type(rest[0]) if len(rest) == 1 else Any
    if origin in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        return list[node_type(inner[0])] if inner else list[Any]
    return hint if hint in (int, float, bool, str) else Any


def overrides_schema(cls: type) -> type:
    """A dataclass with every field of `cls` optional and null (plus `preset` where `cls` has presets)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if hasattr(cls, "from_preset") and "preset" not in names:
        names.insert(0, "preset")
        hints["preset"] = str
    # OmegaConf reads typing.Optional, not `X | None`.
    fields = [(name, Optional[node_type(hints[name])], dataclasses.field(default=None)) for name in names]  # noqa: UP045
    return dataclasses.make_dataclass(f"{cls.__name__}Node", fields)


def typed_node(name: str, types: dict[str, Any]) -> type:
    """A dataclass with one optional field per key, null unless a config sets it."""
    fields = [(key, Optional[hint], dataclasses.field(default=None)) for key, hint in types.items()]  # noqa: UP045
    return dataclasses.make_dataclass(name, fields)


def run_id(run_dir: str, output_root: str) -> str:
    """A tracker's id for a run directory: `default-stage3-1` for `outputs/default/stage3/1`.

    Derived from the directory, never from time, so a resumed or requeued job continues the same tracked run.
    """
    relative = os.path.relpath(os.path.abspath(run_dir), os.path.abspath(output_root))
    return relative.replace(os.sep, "-")


def gpus_per_node(accelerator: str, devices: Any) -> Any:
    """The GPUs a SLURM node must hold for the trainer preset: none on a CPU, else one per device.

    Derived so that `trainer=ddp_cpu` submits to CPU nodes as it is: asking CPU nodes for GPUs would leave the
    job pending. `auto` counts as a GPU, as Lightning picks one when the node has it.
    """
    return None if accelerator == "cpu" else devices


def register() -> None:
    """Store the schemas as `schema/<component>` (conf/model/default.yaml puts them under `model.*`) and
    `schema/data` (each conf/data preset starts from it), and the resolvers the configs use."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id)
    if not OmegaConf.has_resolver("gpus_per_node"):
        OmegaConf.register_new_resolver("gpus_per_node", gpus_per_node)
    store = ConfigStore.instance()
    for name, cls in COMPONENTS.items():
        store.store(group="schema", name=name, node=overrides_schema(cls))
    store.store(group="schema", name="data", node=typed_node("DataNode", DATA_FIELDS))
