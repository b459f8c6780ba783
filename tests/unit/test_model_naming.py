"""How an export names its base LLM (a relative path or a Hub id read from the local cache), and which
models can be loaded in 4 bits: decided from the spec, before any weight is read."""

from __future__ import annotations

from dataclasses import replace

import huggingface_hub
import pytest

from videochat2.loader import quantized
from videochat2.models.llm import LLMConfig, cached_hub_snapshot, is_hub_id, resolve_model_dir
from videochat2.models.qformer import QFormerConfig
from videochat2.models.videochat2 import VideoChat2Config
from videochat2.models.vision import VisionConfig
from videochat2.spec import MediaConfig, ModelSpec


def spec(llm_path: str | None, stage: int = 3) -> ModelSpec:
    return ModelSpec(
        stage=stage,
        vision=VisionConfig.tiny(),
        qformer=QFormerConfig.tiny(),
        qformer_tokenizer="tokenizers/qformer",
        media=MediaConfig(),
        llm=LLMConfig(path=llm_path),
        videochat2=VideoChat2Config(),
        llm_tokenizer="tokenizers/llm",
    )


@pytest.mark.parametrize(
    ("name", "hub"),
    [("lmsys/vicuna-7b-v0", True), ("acme/tiny.llm_v2", True), ("../llm", False), ("./x/y", False), ("llm", False)]
    + [("/data/llm", False), ("a/b/c", False), ("a/..", False)],
)
def test_hub_ids_are_owner_slash_name_and_nothing_that_reads_as_a_path(name, hub):
    assert is_hub_id(name) is hub


def test_relative_paths_resolve_under_the_export_and_hub_ids_stay_ids(tmp_path):
    resolved = spec("../base-llm").resolved_under(tmp_path)
    assert resolved.llm.path == str(tmp_path / "../base-llm")
    assert resolved.qformer_tokenizer == str(tmp_path / "tokenizers/qformer")
    assert spec("acme/tiny-llm").resolved_under(tmp_path).llm.path == "acme/tiny-llm"
    (tmp_path / "acme" / "tiny-llm").mkdir(parents=True)  # a directory of that name in the export wins
    assert spec("acme/tiny-llm").resolved_under(tmp_path).llm.path == str(tmp_path / "acme/tiny-llm")


def test_a_hub_id_is_found_in_the_local_cache_only(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError) as missing:
        resolve_model_dir(LLMConfig(preset="local", path="acme/tiny-llm"), None)
    assert str(missing.value).startswith("LLM acme/tiny-llm is neither a directory nor in the local Hugging Face cache")
    assert "`hf download acme/tiny-llm`" in str(missing.value) and "\n" not in str(missing.value)
    repo = tmp_path / "models--acme--tiny-llm"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert cached_hub_snapshot("acme/tiny-llm") == repo / "snapshots" / "abc123"
    assert resolve_model_dir(LLMConfig(preset="local", path="acme/tiny-llm"), None) == repo / "snapshots" / "abc123"


def test_4bit_loading_applies_to_a_pretrained_llm_only():
    assert quantized(spec("some/llm"), "nf4").llm.quantization == "nf4"
    with pytest.raises(ValueError, match="built in memory"):
        quantized(spec(None), "nf4")
    stage1 = replace(spec(None), stage=1, llm=None, videochat2=None, alignment=object())
    with pytest.raises(ValueError, match="stage-1 model has no LLM"):
        quantized(stage1, "nf4")
    with pytest.raises(ValueError, match="quantization must be one of"):
        quantized(spec("some/llm"), "int3")
