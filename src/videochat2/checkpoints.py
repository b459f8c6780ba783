"""Reading checkpoints safely and initialising a stage from the stages before it.

Every checkpoint is read with `torch.load(weights_only=True)` (or safetensors), so loading never runs
pickled code. Initialisation accounts for every key: a tensor is loaded, ignored by a named rule (the
stage-1 heads when building stage 2), or allowed to stay missing (the frozen base LLM, which comes from
its own directory, and adapters a later stage adds); anything else is an error that lists the keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

# Stage-1 tensors that stages 2-3 do not have (the original drops them the same way).
STAGE1_ONLY = ("vision_proj.", "text_proj.", "itm_head.", "temp", "vision_temp_embed", "qformer.cls.")
QUERY_KEYS = ("query_tokens", "extra_query_tokens")
# The official stage-2/3 classes name the projection and the LLM after the LLM family; ours do not.
OFFICIAL_PREFIXES = {
    f"{family}_{part}.": f"{ours}."
    for family in ("llama", "mistral", "phi")
    for part, ours in (("proj", "llm_proj"), ("model", "llm"))
}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used as asked; the message lists the offending keys."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a Lightning `.ckpt`, a `.pth` (flat or `{"model": ...}`) or a `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path} cannot be read without executing pickled code ({str(err).splitlines()[0]}); "
            "only tensors and plain containers are accepted"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
    return {k: v for k, v in blob.items() if isinstance(v, Tensor)}


def strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Keys under `prefix` without it (Lightning modules keep the model as `self.model`)."""
    if not any(k.startswith(prefix) for k in state):
        return state
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def official_to_ours(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official stage-2/3 state dict to this model's keys.

    `{llama,mistral,phi}_proj.` becomes `llm_proj.` and `{llama,mistral,phi}_model.` becomes `llm.` (the
    PEFT part, `base_model.model.…`, is the same on both sides). The rotary `inv_freq` buffers that older
    transformers saved are dropped: current ones recompute them and hold no such key.
    """
    renamed = {}
    for key, value in state.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue
        prefix = next((p for p in OFFICIAL_PREFIXES if key.startswith(p)), None)
        renamed[OFFICIAL_PREFIXES[prefix] + key[len(prefix):] if prefix else key] = value
    return renamed


@dataclass
class LoadReport:
    """What happened to every key; written next to the run so a user can check an import."""

    sources: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    allowed_missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"initialised from {', '.join(self.sources) or 'nothing'}: {len(self.loaded)} tensors loaded, "
            f"{len(self.ignored)} ignored by rule, {len(self.allowed_missing)} left to their own source"
        )

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.__dict__, indent=1))


def merged_queries(model_queries: Tensor, state: dict[str, Tensor]) -> Tensor:
    """The model's queries filled from a checkpoint's: the first N are reused, the remainder stay as they are.

    `model.num_query` smaller than the checkpoint's keeps its first queries; larger keeps the extra ones
    at their (zero) initialisation, as the paper adds zero-initialised extra queries in stage 2.
    """
    saved = torch.cat([state[k] for k in QUERY_KEYS if k in state], dim=1)
    merged = model_queries.detach().clone()
    n = min(merged.shape[1], saved.shape[1])
    merged[:, :n] = saved[:, :n].to(merged.dtype)
    return merged


def initialise(
    model: nn.Module,
    states: list[tuple[str, dict[str, Tensor]]],
    allowed_missing: tuple[str, ...] = (),
) -> LoadReport:
    """Load `states` (name, tensors) in order, later ones overriding earlier ones.

    `allowed_missing` are key prefixes/substrings that may be absent from every state (e.g. `llm.` base
    weights, `lora_`). Shapes must match exactly, except query tokens, which are merged.
    """
    report = LoadReport()
    target = model.state_dict()
    supplied: set[str] = set()
    for name, state in states:
        report.sources.append(name)
        for key, value in state.items():
            if any(key.startswith(p) for p in STAGE1_ONLY):
                report.ignored[key] = "stage-1 head, not part of stages 2-3"
            elif key not in target and key not in QUERY_KEYS:
                raise CheckpointError(f"{name}: unexpected key {key} (not in the model)")
            elif key not in QUERY_KEYS and target[key].shape != value.shape:
                raise CheckpointError(f"{name}: {key} has shape {tuple(value.shape)}, model {tuple(target[key].shape)}")
            elif key not in QUERY_KEYS:
                target[key] = value
                supplied.add(key)
        if any(k in state for k in QUERY_KEYS):
            _load_queries(model, target, state, supplied)
    missing = [k for k in target if k not in supplied]
    unexplained = [k for k in missing if not any(rule in k for rule in allowed_missing)]
    if unexplained:
        raise CheckpointError(f"keys not found in {report.sources}: {', '.join(unexplained[:20])}"
                              + (f" (+{len(unexplained) - 20} more)" if len(unexplained) > 20 else ""))
    model.load_state_dict(target)
    report.loaded = sorted(supplied)
    report.allowed_missing = missing
    return report


def _load_queries(model: nn.Module, target: dict[str, Tensor], state: dict[str, Tensor], supplied: set[str]) -> None:
    present = [k for k in QUERY_KEYS if k in target]
    merged = merged_queries(torch.cat([target[k] for k in present], dim=1), state)
    start = 0
    for key in present:
        width = target[key].shape[1]
        target[key] = merged[:, start : start + width]
        start += width
        supplied.add(key)
