"""The LLM wrapper on tiny stand-ins of the three paper families, loaded through the real preset paths."""

import importlib.util
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from omegaconf import ListConfig
from peft import PeftModel
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    BitsAndBytesConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PreTrainedTokenizerFast,
)

from videochat2.embedded.llm import SETTINGS_FILE, PretrainingSchedule, PretrainingText, pretrain_tiny_llama
from videochat2.models.llm import (
    PRESETS,
    LLMConfig,
    apply_lora,
    build_llm,
    default_lora_targets,
    family_of,
    lora_state_dict,
    quantization_config,
)

WORDS = ["hello", "world", "video", "cat", "dog", "red", "sofa", "bike", "the", "a"]
SPECIALS = ["<unk>", "<s>", "</s>"]


def save_tokenizer(directory: Path, with_pad: bool = False) -> Path:
    vocab = {token: index for index, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>" if with_pad else None,
    )
    tokenizer.save_pretrained(directory)
    return directory


SIZES = dict(
    vocab_size=len(SPECIALS) + len(WORDS),
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)

FAMILY_CONFIGS = {
    "vicuna7b_v0": LlamaConfig,
    "mistral7b_instruct_v02": MistralConfig,
    "phi3_mini": Phi3Config,
}


@pytest.fixture(scope="module")
def pretrained_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    for preset, config_class in FAMILY_CONFIGS.items():
        directory = root / PRESETS[preset].directory
        AutoModelForCausalLM.from_config(config_class(**SIZES)).save_pretrained(directory)
        save_tokenizer(directory)
    return root


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.mark.parametrize(
    ("preset", "family", "model_type_suffixes"),
    [
        ("vicuna7b_v0", "llama", {"q_proj", "v_proj"}),
        (
            "mistral7b_instruct_v02",
            "mistral",
            {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"},
        ),
        ("phi3_mini", "phi3", {"qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"}),
    ],
)
def test_presets_load_and_target_their_family(
    pretrained_root: Path, preset: str, family: str, model_type_suffixes: set[str]
) -> None:
    config = LLMConfig(preset=preset, lora=True)
    model, tokenizer = build_llm(config, pretrained_root=pretrained_root)
    assert isinstance(model, PeftModel)
    assert family_of(model) == family == family_of(config)
    wrapped = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == model_type_suffixes
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert set(lora_state_dict(model)) == trainable


def test_phi3_lora_keys_follow_the_official_layout(pretrained_root: Path) -> None:
    model, _ = build_llm(LLMConfig(preset="phi3_mini", lora=True), pretrained_root=pretrained_root)
    keys = lora_state_dict(model)
    assert "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.default.weight" in keys
    assert "base_model.model.lm_head.lora_B.default.weight" in keys
    per_layer = 4 * 2
    assert len(keys) == SIZES["num_hidden_layers"] * per_layer + 2


def test_missing_directory_names_the_path_and_the_recipe(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        build_llm(LLMConfig(preset="vicuna7b_v0"), pretrained_root=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "vicuna-7b-v0") in message
    assert "LLaMA-1" in message and "vicuna-7b-delta-v0" in message and "Llama-2" in message


def test_vicuna_preset_loads_weights_saved_by_an_older_transformers(tokenizer_dir: Path) -> None:
    parity_llm = Path(__file__).parents[1] / "data" / "parity" / "stage3_vicuna" / "llm_base"
    model, _ = build_llm(LLMConfig(preset="vicuna7b_v0", path=str(parity_llm), lora=True), tokenizer_dir)
    assert model.config.vocab_size == 300
    assert len(lora_state_dict(model)) == 2 * 2 * 2


def test_pretrained_preset_needs_a_root() -> None:
    with pytest.raises(ValueError, match="Mistral-7B-Instruct-v0.2"):
        build_llm(LLMConfig(preset="mistral7b_instruct_v02"))


def test_local_preset_loads_any_directory_by_path(pretrained_root: Path) -> None:
    path = pretrained_root / "Mistral-7B-Instruct-v0.2"
    model, _ = build_llm(LLMConfig(preset="local", path=str(path)))
    assert family_of(model) == "mistral"


def test_tiny_llama_follows_the_tokenizer(tmp_path: Path) -> None:
    tokenizer_dir = save_tokenizer(tmp_path / "tok", with_pad=False)
    model, tokenizer = build_llm(LLMConfig(preset="tiny_llama", hidden_size=32, num_layers=2), tokenizer_dir)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.bos_token_id == tokenizer.bos_token_id == 1
    assert model.config.pad_token_id == tokenizer.eos_token_id
    assert model.config._attn_implementation == "sdpa"
    assert not any(parameter.requires_grad for parameter in model.parameters())


def test_tiny_llama_needs_a_tokenizer() -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        build_llm(LLMConfig(preset="tiny_llama"))


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash_attn is installed")
def test_flash_attention_without_the_package_is_a_clear_error(tokenizer_dir: Path) -> None:
    with pytest.raises(ImportError, match="flash_attn"):
        build_llm(LLMConfig(attn_implementation="flash_attention_2"), tokenizer_dir)


def test_lora_is_applied_once(tokenizer_dir: Path) -> None:
    model, _ = build_llm(LLMConfig(lora=True, hidden_size=32), tokenizer_dir)
    with pytest.raises(ValueError, match="already"):
        apply_lora(model, LLMConfig(lora=True))
    with pytest.raises(ValueError, match="already"):
        apply_lora(model.get_base_model(), LLMConfig(lora=True))


def test_target_modules_override(tokenizer_dir: Path) -> None:
    model, _ = build_llm(LLMConfig(lora=True, hidden_size=32, target_modules=["o_proj"]), tokenizer_dir)
    wrapped = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == {"o_proj"}


def test_default_targets_per_family() -> None:
    assert default_lora_targets("llama") == ["q_proj", "v_proj"]
    assert "lm_head" in default_lora_targets("mistral")
    assert default_lora_targets("phi3") == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"]
    assert default_lora_targets("qwen2") is None


def test_nf4_settings() -> None:
    assert quantization_config(LLMConfig()) is None
    settings = quantization_config(LLMConfig(preset="vicuna7b_v0", quantization="nf4"))
    assert isinstance(settings, BitsAndBytesConfig)
    assert settings.load_in_4bit and settings.bnb_4bit_quant_type == "nf4" and settings.bnb_4bit_use_double_quant
    assert settings.bnb_4bit_compute_dtype == torch.bfloat16 and settings.bnb_4bit_quant_storage == torch.bfloat16


def test_config_rejects_unknown_values() -> None:
    with pytest.raises(ValueError, match="preset"):
        LLMConfig(preset="llama3")
    with pytest.raises(ValueError, match="quantization"):
        LLMConfig(quantization="int3")
    with pytest.raises(ValueError, match="attn_implementation"):
        LLMConfig(attn_implementation="flash")


@pytest.mark.parametrize("checkpointing", [True, False])
def test_lora_gets_gradients_through_frozen_embeddings(tokenizer_dir: Path, checkpointing: bool) -> None:
    torch.manual_seed(0)
    config = LLMConfig(lora=True, hidden_size=32, gradient_checkpointing=checkpointing)
    model, _ = build_llm(config, tokenizer_dir)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    model.train()
    assert model.base_model.model.model.gradient_checkpointing is checkpointing
    input_ids = torch.tensor([[1, 5, 6, 7, 8, 2]])
    embeds = model.get_input_embeddings()(input_ids)
    assert not model.get_input_embeddings().weight.requires_grad
    output = model(inputs_embeds=embeds, labels=input_ids)
    output.loss.backward()
    lora = {name: parameter for name, parameter in model.named_parameters() if "lora_" in name}
    assert lora
    for name, parameter in lora.items():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("experiment", "family"),
    [
        ("videochat2_vicuna7b_stage3", "llama"),
        ("videochat2_mistral7b_stage3", "mistral"),
        ("videochat2_phi3_stage3", "phi3"),
    ],
)
def test_paper_recipes_build_their_llm_through_the_preset_path(pretrained_root: Path, experiment: str, family: str):
    from recipes.train import model_spec
    from tests.unit.test_configs import compose_train

    spec = model_spec(compose_train([f"experiment={experiment}", f"paths.pretrained={pretrained_root}"]))
    model, tokenizer = build_llm(spec.llm, spec.llm_tokenizer, spec.pretrained_root)
    assert isinstance(model, PeftModel) and family_of(model) == family
    assert len(tokenizer) == SIZES["vocab_size"]


def test_embedded_pretraining_is_reused_across_adapter_settings_and_redone_for_new_weights(tmp_path: Path) -> None:
    tokenizer = save_tokenizer(tmp_path / "tokenizer", with_pad=True)
    text = PretrainingText(["hello world video", "the red cat", "a dog on the sofa"], [], [])
    schedule = PretrainingSchedule(steps=2, batch_size=2, warmup_steps=1)
    out = tmp_path / "llm"
    base = LLMConfig(hidden_size=32, intermediate_size=64, num_heads=4)
    weights = out / "model.safetensors"

    pretrain_tiny_llama(text, tokenizer, out, base, schedule)
    made = weights.stat().st_mtime_ns
    adapted = replace(base, lora=True, lora_r=64, target_modules=ListConfig(["q_proj", "k_proj"]))
    pretrain_tiny_llama(text, tokenizer, out, adapted, schedule)
    assert weights.stat().st_mtime_ns == made

    # A record from before only the weight-shaping fields were kept (every LLMConfig field) still matches.
    record = json.loads((out / SETTINGS_FILE).read_text())
    record["settings"]["config"] = asdict(base)
    (out / SETTINGS_FILE).write_text(json.dumps(record))
    pretrain_tiny_llama(text, tokenizer, out, base, schedule)
    assert weights.stat().st_mtime_ns == made

    pretrain_tiny_llama(text, tokenizer, out, replace(base, num_layers=1), schedule)
    assert weights.stat().st_mtime_ns != made
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 1
