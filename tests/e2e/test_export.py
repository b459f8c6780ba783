"""Export of a trained run (safetensors parts, PEFT adapter, tokenizers, config.json, model card), loading it
back (moved elsewhere, through the transformers classes), and naming its base LLM by a relative path or a Hub id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
import yaml
from huggingface_hub import HfApi
from peft import PeftModel
from transformers import AutoConfig, AutoModelForCausalLM

from lightning_modules import VideoChat2Module
from videochat2.builder import LoadedModel
from videochat2.eval.mvbench import aggregate, write_results
from videochat2.export import export, main
from videochat2.hf import VideoChat2Config, VideoChat2ForConditionalGeneration
from videochat2.loader import load_model

# Every test here trains or loads a trained run: the fast lane (`make test-fast`) leaves them out.
pytestmark = pytest.mark.slow


def probe(loaded: LoadedModel) -> torch.Tensor:
    """Next-token logits of a fixed random clip and prompt."""
    generator = torch.Generator().manual_seed(0)
    vision = loaded.spec.vision
    pixels = torch.randn(2, 4, 3, vision.img_size, vision.img_size, generator=generator)
    instruction = loaded.qformer_tokenizer(["what moves", "which colour"], padding=True, return_tensors="pt")
    tokenizer = loaded.llm_tokenizer
    before = [torch.tensor([tokenizer.bos_token_id] + tokenizer("Watch", add_special_tokens=False)["input_ids"])] * 2
    after = [
        torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in ("What moves?", "Colour?")
    ]
    return loaded.model.next_token_logits(
        pixels, before, after, instruction["input_ids"], instruction["attention_mask"]
    )


@pytest.fixture(scope="module")
def trained(chained_run) -> LoadedModel:
    return load_model(chained_run / "stage3")


@pytest.fixture(scope="module")
def exported(chained_run, tmp_path_factory):
    return export(chained_run, tmp_path_factory.mktemp("export") / "videochat2_tiny")


def test_export_writes_the_documented_files(exported, trained):
    for name in (
        "config.json",
        "vision_encoder.safetensors",
        "qformer.safetensors",
        "projection.safetensors",
        "lora/adapter_config.json",
        "lora/adapter_model.safetensors",
        "tokenizers/llm/tokenizer_config.json",
        "tokenizers/qformer/tokenizer_config.json",
    ):
        assert (exported / name).is_file(), name
    config = json.loads((exported / "config.json").read_text())
    assert (config["format"], config["stage"], config["lora_merged"]) == ("videochat2-export", 3, False)
    assert config["videochat2"]["num_query"] == trained.model.config.num_query


def test_export_loads_back_with_identical_outputs(exported, trained):
    back = load_model(exported)
    assert back.report.sources[0]["format"] == "export"
    assert set(back.report.allowed_missing.values()) == {"base LLM: read from its own directory"}
    assert torch.equal(probe(back), probe(trained))


def test_init_from_an_export_directory_loads_the_stage3_module(exported, trained):
    module = VideoChat2Module(trained.spec, trainable=[], optimizer=None, init_from=[str(exported)])
    assert module.load_report.sources[0]["format"] == "export"
    module.model.eval()
    loaded = LoadedModel(
        module.model, trained.spec, trained.qformer_tokenizer, module.llm_tokenizer, module.load_report
    )
    assert torch.equal(probe(loaded), probe(trained))


def test_lora_directory_is_a_peft_adapter(exported, trained):
    base = AutoModelForCausalLM.from_pretrained(trained.spec.llm.path)
    adapter = PeftModel.from_pretrained(base, exported / "lora")
    ours = {k: v for k, v in trained.model.llm.state_dict().items() if "lora_" in k}
    theirs = {k: v for k, v in adapter.state_dict().items() if "lora_" in k}
    assert ours.keys() == theirs.keys() and len(ours) > 0
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_merge_lora_export_gives_the_same_outputs(chained_run, trained, tmp_path):
    main([str(chained_run), str(tmp_path / "merged"), "--merge-lora"])
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["lora_merged"] and not (tmp_path / "merged" / "lora").exists()
    merged = load_model(tmp_path / "merged")
    assert not any("lora_" in k for k in merged.model.state_dict())
    torch.testing.assert_close(probe(merged), probe(trained), atol=1e-4, rtol=1e-4)


def test_each_training_stage_wrote_its_load_report(chained_run):
    report = json.loads((chained_run / "stage3" / "load_report.json").read_text())
    assert [(s["format"], s["stage"]) for s in report["sources"]] == [("lightning", 1), ("lightning", 2)]
    # Stage 2 ran with 64 queries, stage 3 with 96: the 32 more start at zero, and the report says so.
    assert set(report["allowed_missing"].values()) == {
        "base LLM: read from its own directory",
        "LoRA adapters: start fresh (no source carries them)",
        "extra queries: start at zero (the sources carry fewer queries)",
    }
    assert set(report["ignored"].values()) == {"stage-1 head, not part of stages 2-3"}


def absolute_paths(value) -> list[str]:
    """Every string in a JSON value that is an absolute path."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in absolute_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in absolute_paths(v)]
    return [value] if isinstance(value, str) and value.startswith("/") else []


def fake_hub_cache(cache: Path, repo_id: str, llm_dir: Path) -> None:
    """The local Hugging Face cache layout holding a snapshot of `llm_dir` as `repo_id`."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(llm_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_export_names_no_path_of_this_machine(exported, trained, chained_run):
    config = json.loads((exported / "config.json").read_text())
    assert absolute_paths(config) == []
    assert str(chained_run.parent) not in (exported / "README.md").read_text()
    # By default the LLM is named relative to the export: the directory the model was trained with.
    assert (exported / config["llm"]["path"]).resolve() == Path(trained.spec.llm.path).resolve()
    assert config["source"] == [f"t/stage{n}/checkpoints/last.ckpt" for n in (1, 2, 3)]
    assert (config["model_type"], config["architectures"]) == ("videochat2", ["VideoChat2ForConditionalGeneration"])


def test_a_moved_export_with_its_llm_alongside_loads_with_identical_outputs(chained_run, trained, tmp_path):
    export(chained_run, tmp_path / "here" / "videochat2_tiny", llm_name="../tiny-llm")
    elsewhere = tmp_path / "elsewhere" / "models"
    elsewhere.mkdir(parents=True)
    shutil.move(tmp_path / "here" / "videochat2_tiny", elsewhere / "videochat2_tiny")
    shutil.copytree(trained.spec.llm.path, elsewhere / "tiny-llm")
    back = VideoChat2ForConditionalGeneration.from_pretrained(elsewhere / "videochat2_tiny")
    assert Path(back.loaded.spec.llm.path).resolve() == (elsewhere / "tiny-llm").resolve()
    assert torch.equal(probe(back.loaded), probe(trained))
    shutil.rmtree(elsewhere / "tiny-llm")
    with pytest.raises(FileNotFoundError, match="tiny-llm is missing"):
        load_model(elsewhere / "videochat2_tiny")


def test_an_llm_named_by_hub_id_is_read_from_the_local_cache(chained_run, trained, tmp_path, monkeypatch):
    out = export(chained_run, tmp_path / "hub" / "videochat2_tiny", llm_name="acme/tiny-llm")
    assert json.loads((out / "config.json").read_text())["llm"]["path"] == "acme/tiny-llm"
    assert "base_model: acme/tiny-llm" in (out / "README.md").read_text()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(FileNotFoundError, match=r"acme/tiny-llm is neither a directory nor in the local .*hf download"):
        load_model(out)
    fake_hub_cache(tmp_path / "cache", "acme/tiny-llm", Path(trained.spec.llm.path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    assert torch.equal(probe(load_model(out)), probe(trained))


def test_model_card_tells_the_training_and_the_eval_results(chained_run, tmp_path):
    run = tmp_path / "runs" / "t"
    shutil.copytree(chained_run, run, ignore=shutil.ignore_patterns("eval"))
    records = [
        {"task": "action_count", "correct_official": c, "correct_strict": c, "num_candidates": 3}
        | {"missing_media": False, "unparsed": False}
        for c in (True, False, False, True)
    ]
    (run / "eval" / "mvbench").mkdir(parents=True)
    write_results(aggregate(records), run / "eval" / "mvbench" / "results.json")
    card = (export(run, tmp_path / "card") / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: videochat2-lightning\npipeline_tag: video-text-to-text\n")
    assert "| mvbench | 4 | 50.0% | 50.0% | 50.0% |" in card
    stage3 = yaml.safe_load((run / "stage3" / "config.yaml").read_text())
    lr = stage3["optimizer"]["lr"]
    assert (
        f"| 3 | synthetic_video_qa, synthetic_video_mc, synthetic_image_qa, synthetic_image_mc | 3 | 4 | {lr} | 12 |"
        in card
    )
    assert "| Q-Former | " in card and "96 queries" in card
    assert str(tmp_path) not in card


def test_transformers_classes_load_save_and_push_an_export(exported, trained, tmp_path, monkeypatch):
    model = VideoChat2ForConditionalGeneration.from_pretrained(exported)
    assert isinstance(AutoConfig.from_pretrained(exported), VideoChat2Config)
    assert model.config.spec.videochat2 == trained.spec.videochat2
    assert torch.equal(probe(model.loaded), probe(trained))
    model.save_pretrained(tmp_path / "saved")
    assert torch.equal(probe(load_model(tmp_path / "saved")), probe(trained))
    # A re-export keeps the training record of the card it came from.
    training = (exported / "README.md").read_text().split("## Training")[1].split("## ")[0]
    assert "| 3 | synthetic_video_qa" in training and training in (tmp_path / "saved" / "README.md").read_text()
    with pytest.raises(FileNotFoundError, match="not an export directory"):
        VideoChat2ForConditionalGeneration.from_pretrained(tmp_path / "nothing")

    uploads = []

    def upload_folder(self, folder_path, repo_id, **kwargs):
        uploads.append((repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        uploads.append((Path(folder_path) / "README.md").read_text())
        return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: SimpleNamespace(repo_id=repo_id))
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    assert model.push_to_hub("you/videochat2-tiny").startswith("https://huggingface.co/you/videochat2-tiny")
    (repo_id, names), card = uploads
    assert repo_id == "you/videochat2-tiny" and {"config.json", "README.md", "lora", "qformer.safetensors"} <= set(
        names
    )
    assert "## Training" in card
