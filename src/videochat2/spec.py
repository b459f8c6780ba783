"""The model spec: what a VideoChat2 model is, in plain values, so that it can be rebuilt anywhere.

Training writes it as `model_spec.json` into every stage directory when fit starts; an export writes it as
its `config.json`; `load_model` reads either back. A spec travels with runs and exports that other people
share, so reading one is allow-listed: only the fields of these dataclasses are taken, nothing names code to
import, and no trust setting (`trust_remote_code`, `trust_checkpoint`) can come from it: those are arguments
of whoever runs the command.

Component sizes come from presets defined once, in Python (`VisionConfig.tiny`, `QFormerConfig.bert_base`,
`LLMConfig.from_preset("vicuna7b_v0")`, ...); a config names a preset and overrides single fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from videochat2.models.alignment import AlignmentConfig
from videochat2.models.llm import LLMConfig, is_hub_id
from videochat2.models.qformer import QFormerConfig
from videochat2.models.videochat2 import VideoChat2Config
from videochat2.models.vision import VisionConfig

SPEC_FORMAT = "videochat2-model-spec"
SPEC_VERSION = 1
NORMALIZATIONS = ("imagenet", "clip")


@dataclass
class MediaConfig:
    """How the model was trained to see: frames per clip, pixels per side, normalisation, spatial transform."""

    num_frames: int = 16
    image_size: int = 224
    normalization: str = "imagenet"
    transform: str = "test"

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")


# What the official evaluation and demos feed the released models.
OFFICIAL_MEDIA = MediaConfig(num_frames=16, image_size=224, normalization="clip", transform="official")


@dataclass
class ModelSpec:
    """A stage-1 alignment model (`alignment` set) or a stage-2/3 LLM-connected one (`llm`, `videochat2` set).

    Paths (tokenizers, `llm.path`, `pretrained_root`) are as the run's config gave them; an export keeps
    them relative to its own directory (see `resolved_under`).
    """

    stage: int
    vision: VisionConfig
    qformer: QFormerConfig
    qformer_tokenizer: str
    media: MediaConfig
    alignment: AlignmentConfig | None = None
    llm: LLMConfig | None = None
    videochat2: VideoChat2Config | None = None
    llm_tokenizer: str | None = None
    pretrained_root: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {self.stage!r}")
        if self.stage == 1 and self.alignment is None:
            raise ValueError("a stage-1 spec needs `alignment`")
        if self.stage > 1 and (self.llm is None or self.videochat2 is None):
            raise ValueError(f"a stage-{self.stage} spec needs `llm` and `videochat2`")

    def to_json(self) -> dict[str, Any]:
        return {"format": SPEC_FORMAT, "version": SPEC_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Only the known fields of each part are read; anything else in the file is ignored."""
        parts = {
            "vision": VisionConfig,
            "qformer": QFormerConfig,
            "media": MediaConfig,
            "alignment": AlignmentConfig,
            "llm": LLMConfig,
            "videochat2": VideoChat2Config,
        }
        values = {k: data.get(k) for k in ("stage", "qformer_tokenizer", "llm_tokenizer", "pretrained_root")}
        values["stage"] = int(values["stage"])
        for name, part in parts.items():
            values[name] = known_fields(part, data[name]) if data.get(name) is not None else None
        return cls(**values)

    def resolved_under(self, base: Path) -> ModelSpec:
        """Relative paths taken as relative to `base` (an export directory).

        The base LLM may instead be named by a Hub id (`owner/name`): kept as it is when no such directory
        lies under `base`, it is then read from the local Hugging Face cache.
        """

        def under(path: str | None) -> str | None:
            return str(base / path) if path is not None and not Path(path).is_absolute() else path

        llm = None
        if self.llm is not None:
            named = self.llm.path
            hub = named is not None and is_hub_id(named) and not (base / named).is_dir()
            llm = replace(self.llm, path=named if hub else under(named))
        return replace(
            self, qformer_tokenizer=under(self.qformer_tokenizer), llm_tokenizer=under(self.llm_tokenizer), llm=llm
        )


def known_fields(cls: type, values: Mapping[str, Any]):
    """`cls(**values)` keeping only `cls`'s fields; lists become tuples where the field's default is a tuple."""
    defaults = {f.name: f.default for f in fields(cls)}
    kept = {k: v for k, v in values.items() if k in defaults}
    for key, value in kept.items():
        if isinstance(defaults[key], tuple) and isinstance(value, list):
            kept[key] = tuple(value)
    return cls(**kept)


def from_preset(cls: type, node: Mapping[str, Any]):
    """A component config from `{preset: name, field: value, ...}`; a null field keeps the preset's value."""
    overrides = {k: v for k, v in node.items() if k != "preset" and v is not None}
    base = cls.from_preset(node["preset"])
    return known_fields(cls, {**asdict(base), **overrides})


def spec_from_settings(
    stage: int, model: Mapping[str, Any], media: Mapping[str, Any], pretrained_root: str | None = None
) -> ModelSpec:
    """The spec a training or evaluation config describes.

    `model` holds `vision_encoder`, `qformer` and `llm` as `{preset, overrides...}`, `alignment` (stage 1),
    `num_query`, `num_base_query`, `qformer_text_input`, `bos_quirk` and the tokenizer directories; `media`
    holds `num_frames`, `image_size` and `normalization`. The Q-Former's width towards the ViT and its query
    count follow from the other parts, so they are never set twice.
    """
    vision = from_preset(VisionConfig, model["vision_encoder"])
    qformer = replace(
        from_preset(QFormerConfig, model["qformer"]),
        encoder_width=vision.embed_dim,
        num_query_tokens=int(model["num_query"]),
    )
    common = dict(
        stage=int(stage),
        vision=vision,
        qformer=qformer,
        qformer_tokenizer=str(model["qformer_tokenizer"]),
        media=known_fields(MediaConfig, {**{k: v for k, v in media.items() if v is not None}, "transform": "test"}),
        pretrained_root=pretrained_root,
    )
    if int(stage) == 1:
        alignment = {k: v for k, v in model["alignment"].items() if v is not None}
        return ModelSpec(alignment=known_fields(AlignmentConfig, alignment), **common)
    videochat2 = VideoChat2Config(
        num_query=int(model["num_query"]),
        num_base_query=int(model["num_base_query"]),
        qformer_text_input=bool(model["qformer_text_input"]),
        bos_quirk=bool(model["bos_quirk"]),
    )
    llm_tokenizer = model.get("llm_tokenizer")
    return ModelSpec(
        llm=from_preset(LLMConfig, model["llm"]),
        videochat2=videochat2,
        llm_tokenizer=str(llm_tokenizer) if llm_tokenizer is not None else None,
        **common,
    )


def official_spec(stage: int, family: str | None, pretrained_root: str) -> ModelSpec:
    """A released file: the paper's sizes, its LLM family (stages 2-3), BERT and the LLM under `pretrained_root`."""
    common = dict(
        stage=stage,
        vision=VisionConfig.umt_l16(),
        qformer_tokenizer=str(Path(pretrained_root) / "bert-base-uncased"),
        media=replace(OFFICIAL_MEDIA),
        pretrained_root=pretrained_root,
    )
    if stage == 1:
        return ModelSpec(qformer=QFormerConfig.bert_base(num_query_tokens=32), alignment=AlignmentConfig(), **common)
    stage3 = stage == 3
    return ModelSpec(
        qformer=QFormerConfig.bert_base(num_query_tokens=96),
        llm=LLMConfig.from_preset(family, lora=stage3, lora_dropout=0.0, dtype="float16"),
        videochat2=VideoChat2Config(num_query=96, num_base_query=32, qformer_text_input=stage3),
        **common,
    )


def write_spec(spec: ModelSpec, path: str | Path, **extra: Any) -> None:
    """`model_spec.json` (or an export's config.json): the spec, plus `extra` keys the reader may use."""
    Path(path).write_text(json.dumps({**spec.to_json(), **extra}, indent=1) + "\n")


def read_spec(path: str | Path) -> tuple[ModelSpec, dict[str, Any]]:
    """The spec in `path` and the whole file (for the extra keys its writer added)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "vision" not in data:
        raise ValueError(f"{path} is not a model spec (no `vision` section)")
    return ModelSpec.from_json(data), data
