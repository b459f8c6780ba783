"""The frozen causal language model at the end of VideoChat2, with optional LoRA and 4-bit loading.

Every weight is read from a local directory: runs must work offline, so a missing directory is reported
once, with what belongs there, instead of surfacing as a hub lookup error. The base weights are always
frozen; only LoRA adapters (stage 3) train. Gradient checkpointing is switched on *before* LoRA wrapping
and with non-reentrant checkpoints plus input-grad hooks, because under transformers v5 the other orders
silently leave LoRA without gradients when the embeddings are frozen.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
# `owner/name` as the Hugging Face Hub spells a repository: what an export may name its base LLM by.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
QUANTIZATIONS = (None, "nf4")


@dataclass(frozen=True)
class LLMPreset:
    """Where a paper LLM lives under the pretrained root, how to obtain it, and its `LLMConfig` values."""

    directory: str | None
    family: str
    template: str
    how_to_get: str
    defaults: dict = field(default_factory=dict)


PRESETS: dict[str, LLMPreset] = {
    "tiny_llama": LLMPreset(
        directory=None,
        family="llama",
        template="vicuna_v0",
        how_to_get=(
            "the embedded tiny Llama: built from a LlamaConfig (random weights) when `path` is unset, else the "
            "directory the synthetic data preparation pretrains it into"
        ),
        # A wider initialisation than the usual 0.02: attention starts less uniform, so pretraining learns to
        # point at the option the media slot names in hundreds of steps, not thousands.
        defaults=dict(
            dtype="float32", hidden_size=128, num_layers=2, num_heads=8, intermediate_size=256, initializer_range=0.1
        ),
    ),
    "vicuna7b_v0": LLMPreset(
        directory="vicuna-7b-v0",
        family="llama",
        template="vicuna_v0",
        how_to_get=(
            "a Hugging Face LlamaForCausalLM directory of Vicuna-7B v0, built by applying the lmsys "
            "vicuna-7b-delta-v0 weights to the original LLaMA-1 7B (a Llama-2 base gives garbage output)"
        ),
        defaults=dict(dtype="float16"),
    ),
    "mistral7b_instruct_v02": LLMPreset(
        directory="Mistral-7B-Instruct-v0.2",
        family="mistral",
        template="mistral_instruct",
        how_to_get="the Hugging Face snapshot of mistralai/Mistral-7B-Instruct-v0.2 (config, weights, tokenizer)",
        defaults=dict(dtype="bfloat16"),
    ),
    "phi3_mini": LLMPreset(
        directory="Phi-3-mini-128k-instruct",
        family="phi3",
        template="phi3",
        how_to_get="the Hugging Face snapshot of microsoft/Phi-3-mini-128k-instruct (config, weights, tokenizer)",
        defaults=dict(dtype="bfloat16"),
    ),
    "local": LLMPreset(
        directory=None,
        family="auto",
        template="chat_template",
        how_to_get="any Hugging Face causal-LM directory given as `path`",
    ),
}

LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"),
}

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class LLMConfig:
    """What to load and how to adapt it.

    `path` overrides the preset's `<pretrained_root>/<directory>`; the `preset="local"` option requires it.
    The size fields only shape `tiny_llama` built without a `path` (random weights). `target_modules=None` picks the
    family's targets from the original recipe (see `default_lora_targets`). Whether repository code may run
    (`trust_remote_code`) is no field: a config travels with runs and exports, so that choice is only ever
    an argument of `build_llm`, given by whoever runs the command.
    """

    preset: str = "tiny_llama"
    path: str | None = None
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    target_modules: list[str] | None = None
    gradient_checkpointing: bool = False
    quantization: str | None = None
    template: str | None = None
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown LLM preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {self.attn_implementation!r}"
            )
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> LLMConfig:
        """The preset's values, then `overrides` (e.g. `path`, `lora=True`)."""
        if preset not in PRESETS:
            raise ValueError(f"unknown LLM preset {preset!r}; choose one of {sorted(PRESETS)}")
        return cls(preset=preset, **{**PRESETS[preset].defaults, **overrides})

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def conversation_template(self) -> str:
        """The prompt format the preset was trained with, unless overridden by `template`."""
        return self.template or PRESETS[self.preset].template


def resolve_attn_implementation(name: str) -> str:
    """Refuse flash attention up front: transformers would otherwise fail deep inside loading."""
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ImportError(
            "attn_implementation='flash_attention_2' needs the flash_attn package, which is not installed; "
            "install it or use attn_implementation='sdpa'"
        )
    return name


def quantization_config(config: LLMConfig) -> BitsAndBytesConfig | None:
    """QLoRA's NF4 settings; bf16 storage keeps the packed weights shardable by FSDP."""
    if config.quantization is None:
        return None
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_quant_storage=torch.bfloat16,
    )


def resolve_model_dir(config: LLMConfig, pretrained_root: str | Path | None) -> Path:
    """The directory of a pretrained preset, checked to exist so that the error names what to put there."""
    preset = PRESETS[config.preset]
    if config.path is not None:
        model_dir = Path(config.path)
    elif preset.directory is not None and pretrained_root is not None:
        model_dir = Path(pretrained_root) / preset.directory
    else:
        where = f"<pretrained root>/{preset.directory}" if preset.directory else "a directory"
        raise ValueError(
            f"LLM preset {config.preset!r} needs `path` or a pretrained root holding {where}: {preset.how_to_get}"
        )
    if not model_dir.is_dir() and config.path is not None and is_hub_id(config.path):
        return cached_hub_snapshot(config.path)
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"LLM directory {model_dir} is missing (preset {config.preset!r}). Put there {preset.how_to_get}."
        )
    return model_dir


def is_hub_id(name: str) -> bool:
    """`owner/name` and nothing that reads as a path of its own (`./x`, `../x`, `/x`)."""
    return HUB_ID.match(name) is not None and ".." not in name


def cached_hub_snapshot(repo_id: str) -> Path:
    """The local Hugging Face cache's copy of `repo_id`; runs never download, so a missing copy is one line."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as err:
        raise FileNotFoundError(
            f"LLM {repo_id} is neither a directory nor in the local Hugging Face cache ({type(err).__name__}); "
            f"download it once (`hf download {repo_id}`) or name its directory"
        ) from None


def llm_tokenizer_dir(config: LLMConfig, tokenizer_dir: str | Path | None, pretrained_root: str | Path | None) -> Path:
    """Where the LLM's tokenizer is read from: `tokenizer_dir` when given, else the LLM's own directory."""
    return Path(tokenizer_dir) if tokenizer_dir is not None else resolve_model_dir(config, pretrained_root)


def load_tokenizer(directory: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """A local tokenizer; a missing pad token becomes EOS, as the original does for batching.

    `trust_remote_code` is passed even when False: left unset, transformers asks on a terminal whether to
    run the code a tokenizer directory's `auto_map` names, and one "y" would run what a shared run shipped.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"tokenizer directory {directory} is missing")
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    keep_unknown_characters(tokenizer)
    return tokenizer


def keep_unknown_characters(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give a converted SentencePiece BPE its unknown token, so a character outside the vocabulary reads as
    `<unk>` (as SentencePiece reads it) instead of vanishing: transformers' conversion leaves the BPE without
    one and relies on byte fallback, which a vocabulary without byte pieces cannot provide."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = getattr(backend, "model", None)
    if tokenizer.unk_token is not None and getattr(model, "unk_token", "") is None:
        model.unk_token = tokenizer.unk_token


def build_tiny_llama(config: LLMConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised small Llama whose vocabulary and special ids follow the tokenizer."""
    llama_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=config.initializer_range,
    )
    return AutoModelForCausalLM.from_config(
        llama_config,
        dtype=config.torch_dtype,
        attn_implementation=resolve_attn_implementation(config.attn_implementation),
    )


def load_pretrained(config: LLMConfig, model_dir: Path, trust_remote_code: bool = False) -> PreTrainedModel:
    """A local Hugging Face causal LM, never fetched and never running repository code unless asked."""
    return AutoModelForCausalLM.from_pretrained(
        model_dir,
        local_files_only=True,
        dtype=config.torch_dtype,
        attn_implementation=resolve_attn_implementation(config.attn_implementation),
        quantization_config=quantization_config(config),
        trust_remote_code=trust_remote_code,
    )


def freeze(model: torch.nn.Module) -> None:
    """The LLM never trains its own weights in any stage."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Non-reentrant checkpoints plus input-grad hooks, so LoRA still gets gradients behind frozen embeddings."""
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    model.enable_input_require_grads()


def family_of(model_or_config: PreTrainedModel | LLMConfig) -> str:
    """The architecture family ("llama", "mistral", "phi3", or another Hugging Face model_type)."""
    if isinstance(model_or_config, LLMConfig):
        family = PRESETS[model_or_config.preset].family
        if family == "auto":
            raise ValueError("the family of preset 'local' is only known once loaded; pass the model")
        return family
    return model_or_config.config.model_type


def default_lora_targets(family: str) -> list[str] | None:
    """The original recipe's targets; None lets peft choose its own default for other architectures."""
    targets = LORA_TARGETS.get(family)
    return list(targets) if targets is not None else None


def has_lora(model: torch.nn.Module) -> bool:
    """True for a PeftModel and for a bare model that already carries injected LoRA layers."""
    return isinstance(model, PeftModel) or any("lora_A" in name for name, _ in model.named_modules())


def apply_lora(model: PreTrainedModel, config: LLMConfig) -> PeftModel:
    """Wrap once: a second wrap would nest adapters and change every checkpoint key."""
    if has_lora(model):
        raise ValueError("the model already has LoRA adapters; apply_lora must be called once")
    targets = config.target_modules or default_lora_targets(family_of(model))
    lora_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(targets) if targets is not None else None,
    )
    return get_peft_model(model, lora_config)


def lora_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """LoRA tensors under their PeftModel names (`base_model.model....lora_A.default.weight`), the official layout."""
    return {name: tensor for name, tensor in model.state_dict().items() if "lora_" in name}


def build_llm(
    config: LLMConfig,
    tokenizer_dir: str | Path | None = None,
    pretrained_root: str | Path | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The frozen LLM (LoRA-wrapped when `config.lora`) and its tokenizer.

    The tokenizer comes from `tokenizer_dir`, else from the model directory; `tiny_llama` requires it.
    """
    if config.preset == "tiny_llama" and config.path is None:
        if tokenizer_dir is None:
            raise ValueError("LLM preset 'tiny_llama' needs a tokenizer directory to size its vocabulary")
        if config.quantization is not None:
            raise ValueError("quantization applies to pretrained weights; 'tiny_llama' is built in memory")
        tokenizer = load_tokenizer(tokenizer_dir, trust_remote_code)
        model = build_tiny_llama(config, tokenizer)
    else:
        tokenizer = load_tokenizer(llm_tokenizer_dir(config, tokenizer_dir, pretrained_root), trust_remote_code)
        model = load_pretrained(config, resolve_model_dir(config, pretrained_root), trust_remote_code)
    freeze(model)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if config.lora:
        model = apply_lora(model, config)
    return model, tokenizer
