"""`load_model`: a ready model from wherever its weights are. Evaluation, chat, export and notebooks use it.

    from videochat2 import load_model
    loaded = load_model("outputs/default")                 # a run: its latest stage-3 (else stage-2) result
    loaded = load_model("outputs/default/stage3/1")        # a stage directory, e.g. one job of a sweep
    loaded = load_model("exported/")                       # an export directory
    loaded = load_model("ckpt/videochat2_7b_stage3.pth", pretrained_root="ckpt")   # a released file

A run or export directory is data from someone else: the model is rebuilt from its allow-listed spec
(`videochat2.spec`), never from code or a trust setting named in it; checkpoints are read without running
pickled code unless `trust_checkpoint` is passed. Nothing may start fresh here: a checkpoint that lacks a
trained component is an error that names its keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from videochat2.builder import LoadedModel, build_model
from videochat2.checkpoints import EXPORT_CONFIG, describe
from videochat2.device import DeviceError, place, plan, prepare_backend
from videochat2.run_layout import RunLayout, RunLayoutError, StageDir, locate
from videochat2.spec import ModelSpec, official_spec, read_spec


def export_spec(directory: Path) -> ModelSpec:
    """An export directory's spec (its config.json), its relative paths taken from the directory."""
    return read_spec(directory / EXPORT_CONFIG)[0].resolved_under(directory)


def run_stage(path: Path, stages: Sequence[int]) -> StageDir:
    """The stage directory `path` names: itself, or the latest of `stages` of the run it is the root of."""
    located = locate(path)
    if located is not None:
        return located
    if any(path.glob("stage[123]")):
        return RunLayout(path.parent, path.name).latest_trained(stages)
    raise RunLayoutError(f"{path} is neither a run, a stage directory nor an export directory")


def resolve_source(
    source: str | Path, stages: Sequence[int] = (3, 2), pretrained_root: str | None = None, trust: bool = False
) -> tuple[ModelSpec, list[Path]]:
    """The spec and checkpoint chain `source` stands for (see the module docstring for what it may be)."""
    path = Path(source)
    if (path / EXPORT_CONFIG).is_file():
        return export_spec(path), [path]
    if path.is_dir():
        stage_dir = run_stage(path, stages)
        return stage_dir.read_spec()[0], stage_dir.checkpoints()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such run directory, export directory or checkpoint file")
    stage_dir = locate(path)
    if stage_dir is not None:
        spec, chain = stage_dir.read_spec()
        return spec, [*chain, path]
    info, _, _ = describe(path, trust)
    if info.stage not in (1, 2, 3) or (info.stage > 1 and info.family is None):
        raise ValueError(f"{path} is not an official VideoChat2 file (detected stage {info.stage})")
    return official_spec(info.stage, info.family, pretrained_root or "data/pretrained"), [path]


def load_model(
    source: str | Path | Sequence[str | Path],
    spec: ModelSpec | None = None,
    stages: Sequence[int] = (3, 2),
    pretrained_root: str | None = None,
    device: str = "cpu",
    trust_checkpoint: bool = False,
    trust_remote_code: bool = False,
    precision: str = "auto",
    quantization: str | None = None,
) -> LoadedModel:
    """The model `source` stands for, in eval mode, frozen, on `device` at `precision` (see `videochat2.device`).

    `source` is a run directory (its latest of `stages`), a stage directory, an export directory or a
    checkpoint file; with `spec` given, `source` is the checkpoint file (or list of files, loaded in order)
    and `spec` says what model they fill (an evaluation config naming the paper's sizes, say).
    `quantization="nf4"` loads the base LLM in 4 bits (QLoRA's settings), which only a CUDA GPU runs: asking
    for it elsewhere fails here, before minutes of loading.
    """
    placement = plan(device, precision)
    if quantization is not None and placement.device.type != "cuda":
        raise DeviceError(f"a 4-bit ({quantization}) LLM runs only on a CUDA GPU, and device={device} is the CPU")
    if spec is not None:
        checkpoints = [Path(source)] if isinstance(source, (str, Path)) else [Path(s) for s in source]
    else:
        spec, checkpoints = resolve_source(source, stages, pretrained_root, trust_checkpoint)
    if quantization is not None:
        spec = quantized(spec, quantization)
    loaded = build_model(spec, checkpoints, trust_checkpoint=trust_checkpoint, trust_remote_code=trust_remote_code)
    prepare_backend(placement.device)
    place(loaded.model.eval().requires_grad_(False), placement)
    loaded.placement = placement
    return loaded


def quantized(spec: ModelSpec, quantization: str) -> ModelSpec:
    """`spec` with its base LLM loaded at `quantization` (one line for a model that has no pretrained LLM)."""
    if spec.llm is None:
        raise ValueError("a stage-1 model has no LLM to load in 4 bits")
    if spec.llm.preset == "tiny_llama" and spec.llm.path is None:
        raise ValueError("4-bit loading needs a pretrained LLM directory; this model's tiny LLM is built in memory")
    return replace(spec, llm=replace(spec.llm, quantization=quantization))
