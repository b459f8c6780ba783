"""Export a trained stage-2/3 run as plain files others can load: `python -m videochat2.export <run_dir> <out_dir>`.

Layout of `<out_dir>` (read back by `model.init_from=<out_dir>`, `videochat2-chat --ckpt <out_dir>`):

    config.json                   component configs, stage, LLM preset, media settings, format version
    vision_encoder.safetensors    vision_encoder.*, vision_layernorm.*
    qformer.safetensors           qformer.*, query_tokens, extra_query_tokens
    projection.safetensors        llm_proj.*
    lora/                         the LoRA adapter as a PEFT directory (stage 3; `PeftModel.from_pretrained` reads it)
    llm/                          --merge-lora only: the base LLM with the adapter merged in (no lora/ then)
    tokenizers/qformer, tokenizers/llm
    README.md                     the model card: architecture, training data and steps, evaluation results

Nothing in it names a path of this machine, so the directory can be moved, shared or uploaded to the Hub as
it is. Without --merge-lora the base LLM is not copied: config.json names it by a path relative to the export
(the directory it came from, by default) or by a Hub id (`--llm-name lmsys/vicuna-7b-v0`), read then from the
local Hugging Face cache. `videochat2.hf.VideoChat2ForConditionalGeneration.from_pretrained(<out_dir>)` loads it
the transformers way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from peft import PeftModel
from safetensors.torch import save_file

from videochat2.builder import LoadedModel
from videochat2.checkpoints import EXPORT_CONFIG, EXPORT_LORA, CheckpointError
from videochat2.loader import load_model
from videochat2.model_card import model_card
from videochat2.models.llm import LLMConfig, is_hub_id, resolve_model_dir
from videochat2.spec import write_spec

FORMAT = "videochat2-export"
VERSION = 1
# What transformers reads from config.json: `AutoConfig` finds `VideoChat2Config` by it (videochat2.hf).
MODEL_TYPE = "videochat2"
ARCHITECTURE = "VideoChat2ForConditionalGeneration"
PARTS = {
    "vision_encoder.safetensors": ("vision_encoder.", "vision_layernorm."),
    "qformer.safetensors": ("qformer.", "query_tokens", "extra_query_tokens"),
    "projection.safetensors": ("llm_proj.",),
}


def write_parts(loaded: LoadedModel, out_dir: Path) -> None:
    state = loaded.model.state_dict()
    for filename, prefixes in PARTS.items():
        part = {k: v.detach().cpu().contiguous() for k, v in state.items() if k.startswith(prefixes)}
        save_file(part, out_dir / filename, metadata={"format": FORMAT})


def write_llm(loaded: LoadedModel, out_dir: Path, merge_lora: bool, llm_name: str | None = None) -> LLMConfig:
    """The adapter (or the merged LLM); returns the LLM config others should build, with no absolute path."""
    llm, config = loaded.model.llm, loaded.spec.llm
    if isinstance(llm, PeftModel) and merge_lora:
        llm.merge_and_unload().save_pretrained(out_dir / "llm")
        return replace(config, path="llm", lora=False, quantization=None)
    if isinstance(llm, PeftModel):
        llm.save_pretrained(out_dir / EXPORT_LORA)
    return replace(config, path=base_llm_name(loaded, out_dir, llm_name), quantization=None)


def base_llm_name(loaded: LoadedModel, out_dir: Path, llm_name: str | None) -> str | None:
    """How config.json names the base LLM: `llm_name` (a Hub id or a path relative to the export) when given,
    else the directory the model was built from, relative to the export; None for an LLM built in memory."""
    if llm_name is not None:
        return check_llm_name(llm_name)
    config = loaded.spec.llm
    if config.preset == "tiny_llama" and config.path is None:
        return None
    if config.path is not None and is_hub_id(config.path) and not Path(config.path).is_dir():
        return config.path  # an export that names its LLM by Hub id keeps naming it so
    directory = resolve_model_dir(config, loaded.spec.pretrained_root)
    return os.path.relpath(directory.resolve(), out_dir.resolve())


def check_llm_name(llm_name: str) -> str:
    """An absolute path would tie the export to this machine, which is what naming the LLM avoids."""
    if Path(llm_name).is_absolute():
        raise ValueError(f"--llm-name {llm_name} is absolute: give a Hub id or a path relative to the export")
    return llm_name


def recorded_sources(checkpoints: tuple[str, ...], run_dir: Path) -> list[str]:
    """The checkpoints the export came from, relative to the folder holding `run_dir` (else by file name)."""
    base = run_dir.resolve().parent
    paths = [Path(p).resolve() for p in checkpoints]
    return [str(p.relative_to(base)) if p.is_relative_to(base) else p.name for p in paths]


def write_export(
    loaded: LoadedModel, out_dir: str | Path, merge_lora: bool = False, llm_name: str | None = None, run_dir=None
) -> Path:
    """Write `loaded` as an export directory (see the module docstring); `run_dir` is what it was loaded from,
    read for the model card and named (relatively) in config.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parts(loaded, out_dir)
    llm_config = write_llm(loaded, out_dir, merge_lora, llm_name)
    loaded.llm_tokenizer.save_pretrained(out_dir / "tokenizers" / "llm")
    loaded.qformer_tokenizer.save_pretrained(out_dir / "tokenizers" / "qformer")
    spec = replace(
        loaded.spec,
        llm=llm_config,
        qformer_tokenizer="tokenizers/qformer",
        llm_tokenizer="tokenizers/llm",
        pretrained_root=None,
    )
    write_spec(
        spec,
        out_dir / EXPORT_CONFIG,
        format=FORMAT,
        version=VERSION,
        model_type=MODEL_TYPE,
        architectures=[ARCHITECTURE],
        llm_preset=llm_config.preset,
        lora_merged=merge_lora and isinstance(loaded.model.llm, PeftModel),
        source=recorded_sources(loaded.checkpoints, Path(run_dir)) if run_dir is not None else [],
    )
    (out_dir / "README.md").write_text(model_card(spec, loaded.checkpoints, out_dir.name), encoding="utf-8")
    return out_dir


def prepare_output(out_dir: Path, source: Path, overwrite: bool) -> None:
    """Refuse a directory that already holds files (old parts would mix with new ones), or clear it."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{out_dir} is not empty; export into a new directory or pass --overwrite to replace it")
    if source.resolve() == out_dir.resolve() or out_dir.resolve() in source.resolve().parents:
        raise ValueError(f"{out_dir} holds the model being exported; export into another directory")
    shutil.rmtree(out_dir)


def export(
    run_dir: str | Path,
    out_dir: str | Path,
    merge_lora: bool = False,
    trust: bool = False,
    trust_remote_code: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
    llm_name: str | None = None,
) -> Path:
    """Write the export of `run_dir` (a run or stage directory, another export, or an official file) to `out_dir`.

    Trust settings are this call's arguments only, never read from `run_dir`, and never written to the export.
    `device` only says where the LoRA merge runs (a GPU merges a 7B LLM in seconds); weights keep their dtype.
    `llm_name` names the base LLM in config.json (see the module docstring).
    """
    out_dir = Path(out_dir)
    if llm_name is not None:
        check_llm_name(llm_name)
    prepare_output(out_dir, Path(run_dir), overwrite)
    loaded = load_model(run_dir, trust_checkpoint=trust, trust_remote_code=trust_remote_code, device=device)
    return write_export(loaded, out_dir, merge_lora, llm_name, run_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m videochat2.export", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="outputs/<run_name> (its latest stage 2/3) or outputs/<run_name>/stage<N>")
    parser.add_argument("out_dir")
    parser.add_argument("--merge-lora", action="store_true", help="merge the LoRA adapter into a full LLM copy")
    parser.add_argument("--trust-checkpoint", action="store_true", help="read pickles with arbitrary objects")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="let the LLM directory's own Python code run (never implied)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace what out_dir already holds")
    parser.add_argument("--device", default="cpu", help="where the LoRA merge runs: cpu | auto | cuda | cuda:N")
    parser.add_argument(
        "--llm-name", help="the base LLM as config.json names it: a Hub id or a path relative to out_dir"
    )
    args = parser.parse_args(argv)
    try:
        out = export(
            args.run_dir,
            args.out_dir,
            args.merge_lora,
            args.trust_checkpoint,
            args.trust_remote_code,
            args.overwrite,
            args.device,
            args.llm_name,
        )
    except (ValueError, OSError, CheckpointError) as err:
        sys.exit(f"error: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}")
    print(f"exported {args.run_dir} to {out}")


if __name__ == "__main__":
    main()
