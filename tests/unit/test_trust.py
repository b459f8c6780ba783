"""Run and export directories are data from someone else: a planted file in one is never executed.

Each test plants code that would leave a marker file if it ran (a `_target_` naming `os.system`, a Python
module an `auto_map` points at, a pickle whose reduce calls `os.system`) and goes through eval, chat, export
or training resume as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from videochat2.builder import build_model
from videochat2.chat import main as chat_main
from videochat2.embedded.tokenizers import train_tokenizers
from videochat2.export import PARTS, export
from videochat2.loader import load_model
from videochat2.models.alignment import AlignmentConfig
from videochat2.models.llm import LLMConfig
from videochat2.models.qformer import QFormerConfig
from videochat2.models.videochat2 import VideoChat2Config
from videochat2.models.vision import VisionConfig
from videochat2.spec import MediaConfig, ModelSpec, read_spec, write_spec

CORPUS = ["a red circle moves left", "a blue square stays", "what moves first", "the green star turns"] * 20


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tokenizers")
    train_tokenizers(CORPUS, root)
    return root


def tiny_spec(tokenizers: Path, stage: int = 3) -> ModelSpec:
    vision = VisionConfig.tiny()
    qformer = QFormerConfig.tiny(encoder_width=vision.embed_dim, num_query_tokens=4)
    common = dict(
        stage=stage,
        vision=vision,
        qformer=qformer,
        qformer_tokenizer=str(tokenizers / "qformer"),
        media=MediaConfig(num_frames=2, image_size=64),
    )
    if stage == 1:
        return ModelSpec(alignment=AlignmentConfig(embed_dim=32), **common)
    return ModelSpec(
        llm=LLMConfig(preset="tiny_llama", lora=True, hidden_size=32, num_layers=1, num_heads=2),
        videochat2=VideoChat2Config(num_query=4, num_base_query=4, qformer_text_input=True),
        llm_tokenizer=str(tokenizers / "llm"),
        **common,
    )


def hostile(marker: Path) -> dict:
    """Config entries that run `touch <marker>` if anything instantiates or imports from them."""
    return {"_target_": "os.system", "command": f"touch {marker}"}


def write_checkpoint(spec: ModelSpec, path: Path) -> None:
    """A Lightning-style checkpoint of a freshly built model (the test needs loadable weights, not trained ones)."""
    torch.manual_seed(0)
    model = build_model(spec).model
    state = {f"model.{k}": v for k, v in model.state_dict().items() if not k.startswith("llm.") or "lora_" in k}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "global_step": 1}, path)


def planted_run(root: Path, tokenizers: Path, marker: Path, legacy: bool = False) -> Path:
    """`<root>/planted/stage3`: a trained stage whose model_spec.json and config.yaml hold hostile entries."""
    stage_dir = root / "planted" / "stage3"
    spec = tiny_spec(tokenizers)
    write_checkpoint(spec, stage_dir / "checkpoints" / "last.ckpt")
    config = {
        "stage": 3,
        "run_name": "planted",
        "module": {**hostile(marker), "vision": {**hostile(marker)}},
        "model": {"trust_remote_code": True, "trust_checkpoint": True, "init_from": hostile(marker)},
        "data": {"num_frames": 2, "image_size": 64, "normalization": "imagenet", "root": hostile(marker)},
        "callbacks": {"evil": hostile(marker)},
    }
    if legacy:
        # Before model_spec.json, a stage's chain was the run's earlier stages: give it one.
        write_checkpoint(spec, stage_dir.parent / "stage2" / "checkpoints" / "last.ckpt")
        module = {k: v for k, v in json.loads(json.dumps(spec.to_json())).items() if k not in ("format", "version")}
        config["module"] = {**module, **hostile(marker), "vision": {**module["vision"], "_target_": "os.system"}}
    (stage_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if not legacy:
        write_spec(
            spec,
            stage_dir / "model_spec.json",
            init_from=[],
            trust_remote_code=True,
            trust_checkpoint=True,
            module=hostile(marker),
        )
        data = json.loads((stage_dir / "model_spec.json").read_text())
        data["vision"]["_target_"] = "os.system"
        data["llm"]["trust_remote_code"] = True
        (stage_dir / "model_spec.json").write_text(json.dumps(data))
    return stage_dir


PLANTED_MODULE = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


def plant_remote_code(directory: Path, marker: Path, config: dict, config_name: str) -> None:
    """A Hugging Face directory whose `auto_map` points at a planted module that writes `marker` when imported."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "planted.py").write_text(PLANTED_MODULE.format(marker=str(marker)))
    path = directory / config_name
    existing = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**existing, **config}))


def planted_export(root: Path, tokenizers: Path, marker: Path) -> Path:
    """An export whose config.json asks for remote code, its LLM directory and tokenizer shipping that code."""
    out = root / "export"
    spec = tiny_spec(tokenizers)
    torch.manual_seed(0)
    state = build_model(spec).model.state_dict()
    out.mkdir(parents=True)
    for filename, prefixes in PARTS.items():
        save_file({k: v.contiguous() for k, v in state.items() if k.startswith(prefixes)}, out / filename)
    llm_dir = out / "llm"
    plant_remote_code(
        llm_dir,
        marker,
        {
            "model_type": "planted_model",
            "auto_map": {"AutoConfig": "planted.Config", "AutoModelForCausalLM": "planted.Model"},
            "trust_remote_code": True,
        },
        "config.json",
    )
    shutil.copytree(tokenizers / "llm", out / "tokenizers" / "llm")
    shutil.copytree(tokenizers / "qformer", out / "tokenizers" / "qformer")
    plant_remote_code(
        out / "tokenizers" / "llm",
        marker,
        {"auto_map": {"AutoTokenizer": ["planted.Tokenizer", "planted.Tokenizer"]}, "tokenizer_class": "Planted"},
        "tokenizer_config.json",
    )
    llm = replace(spec.llm, preset="local", path="llm", lora=False)
    exported = replace(spec, llm=llm, qformer_tokenizer="tokenizers/qformer", llm_tokenizer="tokenizers/llm")
    write_spec(exported, out / "config.json", format="videochat2-export", trust_remote_code=True)
    data = json.loads((out / "config.json").read_text())
    data["llm"]["trust_remote_code"] = True
    (out / "config.json").write_text(json.dumps(data))
    return out


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "MARKER"


@pytest.mark.parametrize("legacy", [False, True], ids=["model_spec", "legacy_config_yaml"])
def test_a_run_with_planted_targets_loads_without_running_them(tmp_path, tokenizers, marker, legacy):
    stage_dir = planted_run(tmp_path / "outputs", tokenizers, marker, legacy)
    loaded = load_model(stage_dir.parent)
    assert loaded.spec.stage == 3 and loaded.checkpoints[-1].endswith("last.ckpt")
    assert not marker.exists()


def test_eval_of_a_planted_run_by_run_name_runs_nothing(tmp_path, tokenizers, marker):
    from recipes.evaluate import evaluated_model
    from tests.unit.test_configs import compose_train

    planted_run(tmp_path / "outputs", tokenizers, marker)
    cfg = compose_train([f"paths.output_root={tmp_path / 'outputs'}", "run_name=planted"], config_name="eval")
    evaluated = evaluated_model(cfg, 3)
    assert evaluated.loaded.spec.media.num_frames == 2
    assert not marker.exists()


def test_chat_and_export_of_a_planted_run_run_nothing(tmp_path, tokenizers, marker, ramp_video, capsys):
    stage_dir = planted_run(tmp_path / "outputs", tokenizers, marker)
    assert chat_main(["--ckpt", str(stage_dir), "--video", str(ramp_video), "--max-new-tokens", "2", "What?"]) == 0
    out = export(stage_dir, tmp_path / "exported")
    assert load_model(out).spec.stage == 3
    assert not marker.exists()


def test_training_resume_check_of_a_planted_run_runs_nothing(tmp_path, tokenizers, marker):
    from recipes.train import check_same_run, stage_dir_of
    from tests.unit.test_configs import compose_train

    planted_run(tmp_path / "outputs", tokenizers, marker)
    cfg = compose_train([f"paths.output_root={tmp_path / 'outputs'}", "run_name=planted", "stage=3"])
    cfg.paths.run_dir = str(tmp_path / "outputs" / "planted" / "stage3")
    with pytest.raises(ValueError, match="another configuration"):
        check_same_run(stage_dir_of(cfg), cfg)
    assert not marker.exists()


def test_an_export_asking_for_remote_code_never_imports_it(tmp_path, tokenizers, marker, ramp_video):
    """config.json sets trust_remote_code; its LLM and tokenizer `auto_map` a planted module: refused, not run."""
    out = planted_export(tmp_path, tokenizers, marker)
    spec, _ = read_spec(out / "config.json")
    assert not hasattr(spec.llm, "trust_remote_code")
    with pytest.raises((ValueError, OSError)):
        load_model(out)
    with pytest.raises((ValueError, OSError, SystemExit)):
        chat_main(["--ckpt", str(out), "--video", str(ramp_video), "What?"])
    with pytest.raises((ValueError, OSError)):
        export(out, tmp_path / "again")
    assert not marker.exists()


def test_a_tokenizer_with_planted_code_is_refused_without_asking(tmp_path, tokenizers, marker, monkeypatch):
    """No interactive 'run the custom code? [y/N]' prompt either: the answer is no unless the command line says yes."""
    from videochat2.models.llm import load_tokenizer

    directory = tmp_path / "tok"
    shutil.copytree(tokenizers / "llm", directory)
    plant_remote_code(
        directory,
        marker,
        {"auto_map": {"AutoTokenizer": ["planted.Tokenizer", "planted.Tokenizer"]}, "tokenizer_class": "Planted"},
        "tokenizer_config.json",
    )
    asked = []
    monkeypatch.setattr("builtins.input", lambda *a: asked.append(a) or "y")
    with pytest.raises((ValueError, OSError)):
        load_tokenizer(directory)
    assert not asked and not marker.exists()


def test_a_spec_naming_a_hub_attention_kernel_is_refused(tmp_path, tokenizers):
    """transformers would fetch and run a hub kernel named as attn_implementation; a spec may name none."""
    path = tmp_path / "model_spec.json"
    write_spec(tiny_spec(tokenizers), path)
    data = json.loads(path.read_text())
    data["llm"]["attn_implementation"] = "kernels-community/flash-attn"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="attn_implementation"):
        read_spec(path)


def test_a_pickle_planted_as_a_run_checkpoint_is_refused(tmp_path, tokenizers, marker):
    stage_dir = planted_run(tmp_path / "outputs", tokenizers, marker)

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {}, "payload": Payload()}, stage_dir / "checkpoints" / "last.ckpt")
    with pytest.raises(Exception, match="refusing to run its code"):
        load_model(stage_dir)
    assert not marker.exists()
