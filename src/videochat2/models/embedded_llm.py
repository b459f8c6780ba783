"""The embedded default's language model: a tiny Llama pretrained on the synthetic world's text.

VideoChat2 connects a video encoder to a *pretrained* LLM that stays frozen; a randomly initialised one
could not turn visual tokens into words. The embedded default therefore pretrains its tiny Llama on the
text of the synthetic corpus (captions and question/answer turns in the Vicuna format) on first use, a
minute on a CPU, and saves it as an ordinary Hugging Face directory, so later stages load it through the
same `from_pretrained` path as a real LLM.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from videochat2.models.llm import LLMConfig, build_tiny_llama, load_tokenizer

SETTINGS_FILE = "pretraining.json"


def corpus_texts(annotation_files: list[str | Path]) -> list[str]:
    """Captions as they are, QA turns rendered as text-only Vicuna exchanges."""
    texts = []
    for path in annotation_files:
        for record in json.loads(Path(path).read_text()):
            if "caption" in record:
                texts.append(record["caption"])
            for turn in record.get("QA", []):
                question = f"{turn.get('i', '')} {turn['q']}".strip()
                texts.append(f"###Human: {question} ###Assistant: {turn['a']} ###")
    return texts


def _batches(ids: list[list[int]], batch_size: int, pad_id: int, rng: random.Random):
    order = list(range(len(ids)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            rows = [ids[i] for i in order[start : start + batch_size]]
            length = max(map(len, rows))
            input_ids = torch.full((len(rows), length), pad_id)
            for i, row in enumerate(rows):
                input_ids[i, : len(row)] = torch.tensor(row)
            labels = input_ids.masked_fill(input_ids == pad_id, -100)
            yield input_ids, (input_ids != pad_id).long(), labels


def pretrain_tiny_llama(
    texts: list[str],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    config: LLMConfig,
    steps: int = 400,
    batch_size: int = 32,
    lr: float = 3e-3,
    max_length: int = 96,
    seed: int = 0,
) -> Path:
    """Train the tiny Llama as a plain language model and save it (with its tokenizer) to `out_dir`.

    A directory whose recorded settings match is reused; otherwise the model is trained in a sibling
    directory and moved into place, so an interrupted run never leaves a half-trained model behind.
    """
    out_dir = Path(out_dir)
    settings = {"config": asdict(config), "steps": steps, "batch_size": batch_size, "lr": lr,
                "max_length": max_length, "seed": seed, "texts": len(texts)}
    recorded = out_dir / SETTINGS_FILE
    if recorded.exists() and json.loads(recorded.read_text())["settings"] == settings:
        return out_dir
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_tiny_llama(config, tokenizer).train()
    ids = [
        tokenizer(text, truncation=True, max_length=max_length - 1)["input_ids"] + [tokenizer.eos_token_id]
        for text in texts
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    batches = _batches(ids, batch_size, tokenizer.pad_token_id, random.Random(seed))
    for _, (input_ids, attention_mask, labels) in zip(range(steps), batches):
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    fresh = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(fresh, ignore_errors=True)
    model.eval().save_pretrained(fresh)
    tokenizer.save_pretrained(fresh)
    (fresh / SETTINGS_FILE).write_text(json.dumps({"settings": settings, "final_loss": round(loss.item(), 4)}))
    shutil.rmtree(out_dir, ignore_errors=True)
    fresh.rename(out_dir)
    return out_dir
