"""A ready stage-2/3 VideoChat2 from wherever its weights are: a run directory, an export directory, an official file.

Export and chat need the model outside Lightning and Hydra, so this reads the run's resolved `config.yaml`
with OmegaConf, an export's `config.json`, or, for an official file, the paper's sizes and the LLM family the
file's key names reveal. Loading goes through `checkpoints.load_checkpoints`, so every key is accounted for
and nothing trains: no component may start fresh here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from omegaconf import OmegaConf
from transformers import PreTrainedTokenizerBase

from videochat2.checkpoints import (
    BASE_LLM,
    EXPORT_CONFIG,
    UNUSED_TEXT_PATH,
    LoadReport,
    describe,
    load_checkpoints,
)
from videochat2.models.llm import LLMConfig, build_llm
from videochat2.models.qformer import QFormerConfig
from videochat2.models.tokenizers import load_qformer_tokenizer, qformer_config_for_tokenizer
from videochat2.models.videochat2 import VideoChat2, VideoChat2Config
from videochat2.models.vision import VisionConfig

# What the official evaluation and demos feed the released models.
OFFICIAL_MEDIA = {"num_frames": 16, "image_size": 224, "normalization": "clip", "transform": "official"}


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model: component configs, tokenizers, checkpoints, media settings."""

    vision: VisionConfig
    qformer: QFormerConfig
    llm: LLMConfig
    videochat2: VideoChat2Config
    qformer_tokenizer: str
    llm_tokenizer: str | None
    checkpoints: list[str]
    media: dict
    pretrained_root: str | None = None
    stage: int = 3

    def to_json(self) -> dict:
        return {
            "stage": self.stage, "vision": asdict(self.vision), "qformer": asdict(self.qformer),
            "llm": asdict(self.llm), "videochat2": asdict(self.videochat2), "media": self.media,
        }


@dataclass
class LoadedModel:
    """The model in eval mode with its tokenizers, what built it, and the key account of its loading."""

    model: VideoChat2
    llm_tokenizer: PreTrainedTokenizerBase
    qformer_tokenizer: PreTrainedTokenizerBase
    spec: ModelSpec
    report: LoadReport

    @property
    def template(self) -> str:
        return self.spec.llm.conversation_template


def _dataclass(cls, values: dict):
    """A config dataclass from a dict that may carry Hydra's `_target_` and keys of other versions."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def stage_dir_of(path: Path) -> Path:
    """`outputs/<run>/stageN` as given, or the highest trained stage of `outputs/<run>`."""
    if (path / "config.yaml").is_file():
        return path
    stages = sorted(path.glob("stage[23]/checkpoints/last.ckpt"))
    if not stages:
        raise FileNotFoundError(f"{path} holds no trained stage-2/3 run (no stage<N>/checkpoints/last.ckpt)")
    return stages[-1].parent.parent


def spec_from_run(path: Path) -> ModelSpec:
    """A training run: its resolved config, and the checkpoints of its stages 1..N in order."""
    stage_dir = stage_dir_of(path)
    cfg = OmegaConf.to_container(OmegaConf.load(stage_dir / "config.yaml"), resolve=True)
    module, stage = cfg["module"], int(cfg["stage"])
    if stage not in (2, 3):
        raise ValueError(f"{stage_dir} is a stage-{stage} run; chat and export need a stage-2 or stage-3 run")
    run_root = stage_dir.parent
    earlier = [run_root / f"stage{s}" / "checkpoints" / "last.ckpt" for s in range(1, stage)]
    data = cfg["data"]
    return ModelSpec(
        vision=_dataclass(VisionConfig, module["vision"]), qformer=_dataclass(QFormerConfig, module["qformer"]),
        llm=_dataclass(LLMConfig, module["llm"]), videochat2=_dataclass(VideoChat2Config, module["videochat2"]),
        qformer_tokenizer=module["qformer_tokenizer"], llm_tokenizer=module["llm_tokenizer"],
        checkpoints=[str(p) for p in earlier if p.is_file()] + [str(stage_dir / "checkpoints" / "last.ckpt")],
        media={"num_frames": data["num_frames"], "image_size": data["image_size"],
               "normalization": data["normalization"], "transform": "test"},
        pretrained_root=module.get("pretrained_root"), stage=stage,
    )


def spec_from_export(path: Path) -> ModelSpec:
    """An export directory: its config.json; paths inside it are relative to the directory."""
    config = json.loads((path / EXPORT_CONFIG).read_text())
    llm = _dataclass(LLMConfig, config["llm"])
    if llm.path is not None and not Path(llm.path).is_absolute():
        llm.path = str(path / llm.path)
    return ModelSpec(
        vision=_dataclass(VisionConfig, config["vision"]), qformer=_dataclass(QFormerConfig, config["qformer"]),
        llm=llm, videochat2=_dataclass(VideoChat2Config, config["videochat2"]),
        qformer_tokenizer=str(path / "tokenizers" / "qformer"), llm_tokenizer=str(path / "tokenizers" / "llm"),
        checkpoints=[str(path)], media=config["media"], stage=int(config["stage"]),
    )


def spec_from_official(path: Path, pretrained_root: str, trust: bool = False) -> ModelSpec:
    """A released stage-2/3 file: the paper's sizes, the LLM its key names reveal, BERT and the LLM under `pretrained_root`."""
    info, _, _ = describe(path, trust)
    if info.stage not in (2, 3) or info.family is None:
        raise ValueError(f"{path} is not an official stage-2/3 VideoChat2 file (detected stage {info.stage})")
    stage3 = info.stage == 3
    return ModelSpec(
        vision=VisionConfig.umt_l16(), qformer=QFormerConfig.bert_base(),
        llm=LLMConfig(preset=info.family, dtype="float16", lora=stage3, lora_dropout=0.0),
        videochat2=VideoChat2Config(num_query=96, num_base_query=32, qformer_text_input=stage3),
        qformer_tokenizer=str(Path(pretrained_root) / "bert-base-uncased"), llm_tokenizer=None,
        checkpoints=[str(path)], media=dict(OFFICIAL_MEDIA), pretrained_root=pretrained_root, stage=info.stage,
    )


def resolve_spec(ckpt: str | Path, pretrained_root: str = "data/pretrained", trust: bool = False) -> ModelSpec:
    """Dispatch on what `ckpt` is: an export directory, a run directory, or a checkpoint file."""
    path = Path(ckpt)
    if (path / EXPORT_CONFIG).is_file():
        return spec_from_export(path)
    if path.is_dir():
        return spec_from_run(path)
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt {path}: no such run directory, export directory or checkpoint file")
    return spec_from_official(path, pretrained_root, trust)


def build_model(spec: ModelSpec, trust: bool = False) -> LoadedModel:
    """Build the model the spec describes and load its checkpoints with a full key account, in eval mode."""
    qformer_tokenizer = load_qformer_tokenizer(spec.qformer_tokenizer)
    qformer = qformer_config_for_tokenizer(spec.qformer, qformer_tokenizer)
    llm, llm_tokenizer = build_llm(spec.llm, spec.llm_tokenizer, spec.pretrained_root)
    model = VideoChat2(spec.videochat2, spec.vision, qformer, llm)
    unused = () if spec.videochat2.qformer_text_input else (UNUSED_TEXT_PATH,)
    report = load_checkpoints(model, spec.checkpoints, (BASE_LLM, *unused), (), trust)
    spec = replace(spec, qformer=qformer)
    return LoadedModel(model.eval().requires_grad_(False), llm_tokenizer, qformer_tokenizer, spec, report)


def load_model(ckpt: str | Path, pretrained_root: str = "data/pretrained", trust: bool = False) -> LoadedModel:
    """A ready model from a run directory, an export directory or an official stage-2/3 file."""
    return build_model(resolve_spec(ckpt, pretrained_root, trust), trust)
