"""Export of a trained run (safetensors parts, PEFT adapter, tokenizers, config.json) and loading it back."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from lightning_modules import VideoChat2Module
from videochat2.builder import LoadedModel
from videochat2.export import export, main
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
