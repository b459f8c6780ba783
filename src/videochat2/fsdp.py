"""FSDP wrapping for a frozen LLM with trainable adapters, Q-Former and projection.

FSDP flattens each unit's parameters into one buffer, and with `use_orig_params` a unit that mixes
frozen and trainable parameters still allocates gradient memory for all of them. So every leaf module
whose parameters train (LoRA A/B, Q-Former layers, the projection) gets its own unit, each LLM decoder
layer is a unit, and the rest of the LLM (embeddings, final norm, head: frozen, in the LLM's dtype)
is one more, so no unit mixes the bf16 frozen weights with fp32 trainable ones.

The policies are callables of the form `torch.distributed.fsdp.wrap` expects, built from names so
that a config can choose them before any model exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn
from transformers import PreTrainedModel

Policy = Callable[[nn.Module, bool, int], bool]


def is_decoder_layer(module: nn.Module, layer_names: Iterable[str] | None = None) -> bool:
    """A transformer block of the LLM: a named class, or by default any `*DecoderLayer` (Llama, Mistral, Phi-3...)."""
    name = type(module).__name__
    return name in set(layer_names) if layer_names else name.endswith("DecoderLayer")


def trains_own_parameters(module: nn.Module) -> bool:
    """A module holding parameters of its own, all of them trained (a LoRA matrix, a Q-Former Linear)."""
    own = list(module.parameters(recurse=False))
    return bool(own) and all(p.requires_grad for p in own)


def should_wrap(module: nn.Module, layer_names: Iterable[str] | None = None) -> bool:
    return is_decoder_layer(module, layer_names) or trains_own_parameters(module) or isinstance(module, PreTrainedModel)


def wrap_policy(layer_names: list[str] | None = None) -> Policy:
    """FSDP `auto_wrap_policy`: decoder layers, trainable leaves, and the LLM itself are units."""

    def policy(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
        return True if recurse else should_wrap(module, layer_names)

    return policy


def checkpoint_policy(layer_names: list[str] | None = None) -> Policy:
    """FSDP `activation_checkpointing_policy`: recompute each decoder layer in the backward pass.

    FSDP's checkpoint wrapper is non-reentrant, so LoRA behind frozen embeddings still gets gradients.
    """

    def policy(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
        return True if recurse else is_decoder_layer(module, layer_names)

    return policy
