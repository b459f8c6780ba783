"""Reading checkpoints safely, mapping official names to ours, and initialising a model with a full key account.

Every file is read without executing pickled code: `torch.load(weights_only=True)` with only the plain
config containers the official training scripts saved allow-listed, or safetensors. A file that needs any
other pickled object is refused unless the caller trusts it (`trust_checkpoint=true`).

Formats (detected, see `describe`): a flat state dict (`umt_l16_qformer.pth`), `{"model": ...}` (the
official stage-2/3 files, the UMT release), a Lightning `.ckpt` of this package, a `.safetensors` file, and
an export directory (`videochat2.export`). Names are mapped where they must differ, and every key ends up
loaded, ignored by a named rule, or missing under a named rule; anything else is an error listing the keys.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

# Stage-1 tensors that stages 2-3 do not have (the original drops them the same way).
STAGE1_ONLY = ("vision_proj.", "text_proj.", "itm_head.", "temp", "vision_temp_embed", "qformer.cls.")
# Modules of the UMT pretraining checkpoint that VideoChat2 removed.
UMT_ONLY = ("text_encoder.", "clip_decoder.", "pool_norm.", "vision_encoder.encoder.norm.")
QUERY_KEYS = ("query_tokens", "extra_query_tokens")
# The official stage-2/3 classes name the projection and the LLM after the LLM family; ours do not.
OFFICIAL_FAMILIES = {"llama": "vicuna7b_v0", "mistral": "mistral7b_instruct_v02", "phi": "phi3_mini"}
OFFICIAL_PREFIXES = {
    f"{family}_{part}.": f"{ours}."
    for family in OFFICIAL_FAMILIES
    for part, ours in (("proj", "llm_proj"), ("model", "llm"))
}
PEFT_PREFIX = "base_model.model."
# The Q-Former's text path (embeddings and text feed-forward): unused without an instruction, so stage-2 files lack it.
QFORMER_TEXT_PATH = (
    r"qformer\.bert\.(embeddings\.(word|position)_embeddings|encoder\.layer\.\d+\.(intermediate|output)\.)"
)
VIT_BLOCK = re.compile(r"vision_encoder\.encoder\.blocks\.(\d+)\.")
# Export directory layout (written by videochat2.export).
EXPORT_CONFIG = "config.json"
EXPORT_PARTS = ("vision_encoder.safetensors", "qformer.safetensors", "projection.safetensors")
EXPORT_LORA = "lora"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used as asked; the message lists the offending keys."""


# Plain containers found in official training checkpoints; nothing here runs code when unpickled. The
# `EasyDict` config the training scripts saved beside the weights is read as an OrderedDict.
SAFE_CLASSES = [(OrderedDict, "easydict.EasyDict"), argparse.Namespace]


@dataclass(frozen=True)
class MissingRule:
    """Model keys (a regular expression) that may stay at their own initialisation, and why."""

    name: str
    pattern: str

    def covers(self, key: str) -> bool:
        return re.match(self.pattern, key) is not None


BASE_LLM = MissingRule("base LLM: read from its own directory", r"llm\.(?!.*lora_)")
FRESH_LORA = MissingRule("LoRA adapters: start fresh (no source carries them)", r"llm\..*lora_")
FRESH_PROJECTION = MissingRule("projection: starts fresh (no source carries it)", r"llm_proj\.")
UNUSED_TEXT_PATH = MissingRule("Q-Former text path: unused without an instruction", QFORMER_TEXT_PATH)
FRESH_STAGE1 = MissingRule("Q-Former and heads: start fresh (a vision-encoder-only source)", r"(?!vision_encoder\.)")
FRESH_QUERIES = MissingRule("extra queries: start at zero (the sources carry fewer queries)", r"extra_query_tokens$")


@dataclass
class CheckpointInfo:
    """What `describe` found out about a checkpoint: how it was stored, which stage, which LLM family."""

    path: str
    format: str
    stage: int | None
    family: str | None


@dataclass
class LoadReport:
    """What happened to every key; written next to the run so a user can check an import."""

    sources: list[dict] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    allowed_missing: dict[str, str] = field(default_factory=dict)
    # Query tokens are loaded per query, so a key counted as loaded or missing may be partly either.
    queries_loaded: int = 0
    queries_total: int = 0

    def summary(self) -> str:
        names = ", ".join(f"{s['path']} ({s['format']}, stage {s['stage']})" for s in self.sources) or "nothing"
        lines = [
            f"initialised from {names}: {len(self.loaded)} tensors loaded, {len(self.ignored)} ignored by "
            f"rule, {len(self.allowed_missing)} left to their own source"
        ]
        for title, table in (("ignored", self.ignored), ("missing", self.allowed_missing)):
            for rule in sorted(set(table.values())):
                lines.append(f"  {title}: {sum(v == rule for v in table.values())} x {rule}")
        if self.queries_loaded < self.queries_total:
            lines.append(
                f"  queries: {self.queries_loaded} of {self.queries_total} from the checkpoints, the other "
                f"{self.queries_total - self.queries_loaded} keep their initialisation"
            )
        return "\n".join(lines)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.__dict__, indent=1) + "\n")


def _torch_load(path: Path, trust: bool) -> object:
    if trust:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(SAFE_CLASSES):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"WeightsUnpickler error: ([^.\n]*)", str(err))
        reason = found.group(1).strip() if found else "an object outside the allowed set"
        raise CheckpointError(
            f"{path} holds pickled objects other than tensors and plain containers ({reason}); refusing to "
            "run its code. If you trust where the file comes from, pass model.trust_checkpoint=true (train.py, "
            "eval.py) or --trust-checkpoint (videochat2-chat, videochat2.export)"
        ) from None


def _unwrap(blob: object) -> tuple[dict, str]:
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        return blob["state_dict"], "lightning"
    if isinstance(blob, dict) and isinstance(blob.get("model"), dict):
        return blob["model"], "model-dict"
    if isinstance(blob, dict):
        return blob, "flat"
    raise CheckpointError(f"expected a dict of tensors, found {type(blob).__name__}")


# The index file of a torch.distributed.checkpoint directory (what FSDP's sharded `last.ckpt` is).
DCP_METADATA = ".metadata"


def read_checkpoint(path: str | Path, trust: bool = False) -> tuple[dict[str, Tensor], str]:
    """The tensors of a checkpoint as stored (names untouched) and its storage format."""
    path = Path(path)
    if path.is_dir() and (path / DCP_METADATA).is_file():
        return read_sharded(path), "lightning"
    if path.is_dir():
        return read_export(path), "export"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path), "safetensors"
    state, kind = _unwrap(_torch_load(path, trust))
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}, kind


def read_state_dict(path: str | Path, trust: bool = False) -> dict[str, Tensor]:
    """Tensors of a Lightning `.ckpt`, a `.pth` (flat or `{"model": ...}`), a `.safetensors` file or an export dir."""
    return read_checkpoint(path, trust)[0]


def read_sharded(directory: Path) -> dict[str, Tensor]:
    """The model tensors of a sharded (FSDP, torch.distributed.checkpoint) Lightning `last.ckpt/` directory.

    Lightning stores the module's state dict under `model` (our keys with the module's `model.` prefix, as in
    a plain `.ckpt`) beside the optimizer states; the shards are read into whole tensors in this one process,
    so no process group is needed. DCP files hold tensors and plain metadata only.
    """
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict = {}
    reader = FileSystemReader(str(directory))
    _load_state_dict(state, storage_reader=reader, planner=_EmptyStateDictLoadPlanner(keys={"model"}), no_dist=True)
    model = state.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{directory} is a sharded checkpoint without a 'model' state dict")
    return {k: v for k, v in model.items() if isinstance(v, Tensor)}


def read_export(directory: Path) -> dict[str, Tensor]:
    """An export directory's tensors under our names; the PEFT adapter's keys get the adapter name back."""
    from safetensors.torch import load_file

    if not (directory / EXPORT_CONFIG).is_file():
        raise CheckpointError(f"{directory} is a directory without {EXPORT_CONFIG}: not a videochat2 export")
    state: dict[str, Tensor] = {}
    for part in EXPORT_PARTS:
        state.update(load_file(directory / part))
    adapter = directory / EXPORT_LORA / "adapter_model.safetensors"
    if adapter.is_file():
        for key, value in load_file(adapter).items():
            state["llm." + re.sub(r"\.(lora_[AB])\.weight$", r".\1.default.weight", key)] = value
    return state


def strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Keys under `prefix` without it (Lightning modules keep the model as `self.model`)."""
    if not any(k.startswith(prefix) for k in state):
        return state
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def official_to_ours(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official state dict to this model's keys, dropping what `rename` ignores."""
    return rename(state)[0]


def rename(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Official (or our own) names -> this model's keys, plus the keys dropped with the rule that dropped them.

    - `{llama,mistral,phi}_proj.` -> `llm_proj.`; `{llama,mistral,phi}_model.` -> `llm.` (the PEFT part,
      `base_model.model.…lora_{A,B}.default.weight`, is the same on both sides, so a stage-3 file maps into
      the adapter the model already has);
    - a doubly wrapped PEFT prefix (`base_model.model.base_model.model.`, the original's issue #260) -> one;
    - UMT vision-only files (`encoder.…`) -> `vision_encoder.encoder.…`;
    - rotary `inv_freq` buffers (older transformers saved them; current ones recompute them) are dropped.
    """
    renamed, ignored = {}, {}
    vision_only = not any(k.startswith("vision_encoder.") for k in state)
    for key, value in state.items():
        if key.endswith("rotary_emb.inv_freq"):
            ignored[key] = "rotary inv_freq buffer: recomputed by the LLM"
            continue
        prefix = next((p for p in OFFICIAL_PREFIXES if key.startswith(p)), None)
        new = OFFICIAL_PREFIXES[prefix] + key[len(prefix) :] if prefix else key
        while f"{PEFT_PREFIX}{PEFT_PREFIX}" in new:
            new = new.replace(f"{PEFT_PREFIX}{PEFT_PREFIX}", PEFT_PREFIX, 1)
        if vision_only and new.startswith("encoder."):
            new = "vision_encoder." + new
        renamed[new] = value
    return renamed, ignored


def detect_stage(keys: Iterable[str]) -> int | None:
    """0 for a vision-encoder-only file (UMT), 1 for the alignment model, 2 or 3 (LoRA) for LLM-connected ones."""
    keys = list(keys)
    if any("lora_" in k for k in keys):
        return 3
    if any(k.startswith(("llm_proj.", "llm.")) for k in keys):
        return 2
    if any(k.startswith(("itm_head.", "vision_temp_embed", "query_tokens")) for k in keys):
        return 1
    if keys and all(k.startswith("vision_encoder.") for k in keys):
        return 0
    return None


def detect_family(keys: Iterable[str]) -> str | None:
    """The LLM preset an official file was trained with, read off its `{llama,mistral,phi}_` prefixes."""
    for key in keys:
        for family, preset in OFFICIAL_FAMILIES.items():
            if key.startswith((f"{family}_proj.", f"{family}_model.")):
                return preset
    return None


def describe(path: str | Path, trust: bool = False) -> tuple[CheckpointInfo, dict[str, Tensor], dict[str, str]]:
    """Read a checkpoint, detect what it is, and rename it to our keys (with the keys dropped by rule)."""
    raw, kind = read_checkpoint(path, trust)
    ours = strip_prefix(raw, "model.") if kind == "lightning" else raw
    renamed, ignored = rename(ours)
    info = CheckpointInfo(str(path), kind, detect_stage(renamed), detect_family(ours))
    if kind == "export":
        config = json.loads((Path(path) / EXPORT_CONFIG).read_text())
        info.stage, info.family = config["stage"], config["llm_preset"]
    return info, renamed, ignored


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


def _ignore_rule(key: str, target: dict[str, Tensor]) -> str | None:
    """Why a checkpoint key the model does not have may be dropped (None: it may not)."""
    if key.startswith(STAGE1_ONLY):
        return "stage-1 head, not part of stages 2-3"
    if key.startswith(UMT_ONLY):
        return "UMT pretraining module that VideoChat2 removed"
    block = VIT_BLOCK.match(key)
    if block and not any(k.startswith(f"vision_encoder.encoder.blocks.{block.group(1)}.") for k in target):
        return "ViT block past the feature layer (return_index)"
    return None


def missing_rules(
    states: list[tuple[str, dict[str, Tensor]]], always: Iterable[MissingRule], if_absent: Iterable[MissingRule]
) -> list[MissingRule]:
    """`always` plus each `if_absent` rule that no source supplies a key for (a component a later stage adds)."""
    keys = [k for _, state in states for k in state]
    return [*always, *(r for r in if_absent if not any(r.covers(k) for k in keys))]


def initialise(
    model: nn.Module,
    states: list[tuple[str, dict[str, Tensor]]],
    allowed_missing: Iterable[MissingRule | str] = (),
    ignored: dict[str, str] | None = None,
    exact_queries: bool = False,
) -> LoadReport:
    """Load `states` (name, tensors in our names) in order, later ones overriding earlier ones.

    Shapes must match exactly, except query tokens, which are merged; with `exact_queries` (a model that
    will not be trained: evaluation, chat, export) the last state carrying queries must carry exactly the
    model's number, since merging would zero-pad or cut what the checkpoint was trained with. A model key no
    state supplies must be covered by an `allowed_missing` rule (a plain string is a key prefix).
    """
    rules = [r if isinstance(r, MissingRule) else MissingRule(f"allowed: {r}", re.escape(r)) for r in allowed_missing]
    report = LoadReport(ignored=dict(ignored or {}))
    target = model.state_dict()
    supplied: set[str] = set()
    queries_supplied = 0
    for name, state in states:
        unexpected = []
        for key, value in state.items():
            if key in QUERY_KEYS:
                continue
            if key not in target:
                rule = _ignore_rule(key, target)
                if rule is None:
                    unexpected.append(key)
                else:
                    report.ignored[key] = rule
            elif target[key].shape != value.shape:
                raise CheckpointError(f"{name}: {key} has shape {tuple(value.shape)}, model {tuple(target[key].shape)}")
            else:
                target[key] = value.to(target[key].dtype)
                supplied.add(key)
        if unexpected:
            hint = (
                " (LoRA keys: build the LLM with model.llm.lora=true)" if any("lora_" in k for k in unexpected) else ""
            )
            raise CheckpointError(f"{name}: {len(unexpected)} keys not in the model{hint}: {_listing(unexpected)}")
        if any(k in state for k in QUERY_KEYS):
            queries_supplied = max(queries_supplied, _load_queries(target, state))
    supplied |= _covered_query_keys(target, queries_supplied)
    missing = [k for k in target if k not in supplied]
    for key in missing:
        rule = next((r for r in rules if r.covers(key)), None)
        if rule is not None:
            report.allowed_missing[key] = rule.name
    unexplained = [k for k in missing if k not in report.allowed_missing]
    if exact_queries and all(k in QUERY_KEYS for k in unexplained):
        # A missing component (another stage's file) is the first thing to name; then a query count that differs.
        _check_query_count(states, sum(target[k].shape[1] for k in QUERY_KEYS if k in target))
    if unexplained:
        raise CheckpointError(
            f"{len(unexplained)} model keys found in none of {[n for n, _ in states]}: {_listing(unexplained)}"
        )
    model.load_state_dict(target)
    report.loaded = sorted(supplied)
    report.queries_total = sum(target[k].shape[1] for k in QUERY_KEYS if k in target)
    report.queries_loaded = min(queries_supplied, report.queries_total)
    return report


def load_checkpoints(
    model: nn.Module,
    paths: Iterable[str | Path],
    always_missing: Iterable[MissingRule] = (),
    missing_if_absent: Iterable[MissingRule] = (),
    trust: bool = False,
    exact_queries: bool = False,
) -> LoadReport:
    """What `model.init_from` does: read, detect and rename each file, then `initialise` with a full key account."""
    infos, states, ignored = [], [], {}
    for path in paths:
        info, state, dropped = describe(path, trust)
        infos.append(info)
        states.append((str(path), state))
        ignored.update(dropped)
    rules = missing_rules(states, always_missing, missing_if_absent)
    report = initialise(model, states, rules, ignored, exact_queries)
    report.sources = [info.__dict__ for info in infos]
    return report


def _listing(keys: list[str], limit: int = 20) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _load_queries(target: dict[str, Tensor], state: dict[str, Tensor]) -> int:
    """Merge a state's queries into the model's (see `merged_queries`); returns how many it carried."""
    present = [k for k in QUERY_KEYS if k in target]
    merged = merged_queries(torch.cat([target[k] for k in present], dim=1), state)
    start = 0
    for key in present:
        width = target[key].shape[1]
        target[key] = merged[:, start : start + width]
        start += width
    return sum(state[k].shape[1] for k in QUERY_KEYS if k in state)


def _check_query_count(states: list[tuple[str, dict[str, Tensor]]], model_queries: int) -> None:
    carrying = [(name, state) for name, state in states if any(k in state for k in QUERY_KEYS)]
    if not carrying:
        return
    name, state = carrying[-1]
    saved = sum(state[k].shape[1] for k in QUERY_KEYS if k in state)
    if saved != model_queries:
        raise CheckpointError(
            f"{name} was trained with {saved} queries but the model built here has {model_queries} "
            f"(model.num_query): load its run or stage directory to use its own spec, or set model.num_query={saved}"
        )


def _covered_query_keys(target: dict[str, Tensor], count: int) -> set[str]:
    """The query keys whose every query came from a checkpoint (the model's queries run base, then extra)."""
    covered, end = set(), 0
    for key in (k for k in QUERY_KEYS if k in target):
        end += target[key].shape[1]
        if count >= end:
            covered.add(key)
    return covered
