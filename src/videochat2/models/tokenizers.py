"""Local tokenizers and the model settings that follow from them (vocabulary, special ids)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from videochat2.models.qformer import QFormerConfig


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local directory; never reaches the network."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"tokenizer directory {path} does not exist: for the embedded default it is built with the "
            "synthetic data; for real runs put the Hugging Face tokenizer files there"
        )
    # Explicitly False: unset, transformers would offer on a terminal to run code a shared directory names.
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)


def load_qformer_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A BERT tokenizer with the `[DEC]` captioning BOS token the Q-Former needs (added if absent)."""
    tokenizer = load_tokenizer(path)
    if tokenizer.bos_token is None:
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def qformer_config_for_tokenizer(config: QFormerConfig, tokenizer: PreTrainedTokenizerBase) -> QFormerConfig:
    """The vocabulary and special ids are the tokenizer's, whatever the preset says."""
    return replace(
        config,
        vocab_size=len(tokenizer),
        dec_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
