"""The embedded default's language model: a tiny Llama pretrained on the synthetic world's text.

VideoChat2 connects a video encoder to a *pretrained* LLM that stays frozen; a randomly initialised one
could not turn visual tokens into words. The embedded default therefore pretrains its tiny Llama on first
use (a few minutes on a CPU) and saves it as an ordinary Hugging Face directory, so later stages load it
through the same `from_pretrained` path as a real LLM.

A plain language model of the corpus learns the answer prior and ignores its context: it then cannot use
visual tokens either. So most of the pretraining is *grounded*: the clip's caption stands where the visual
tokens will stand (between `<Video>` and `</Video>`), and the loss falls on the answer only, in the shapes
the later stages use: caption requests (stage 2), instruction conversations (stage 3) and the MVBench
prompt ending in `Best option:(` (evaluation). Multiple-choice options are shuffled on every draw, so the
letter can only come from matching the options against the context.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from videochat2.data.conversation import (
    Conversation,
    Segment,
    build_caption_conversation,
    build_conversation,
    tokenize_conversation,
)
from videochat2.eval.prompts import build_prompt, option_letter, qa_template
from videochat2.models.llm import LLMConfig, build_tiny_llama, load_tokenizer

SETTINGS_FILE = "pretraining.json"
IGNORE_INDEX = -100
MC_PATTERN = re.compile(r"^Question: (?P<question>.*)\nOptions:\n(?P<options>(?:\([A-Z]\) .*\n?)+)$", re.S)
# Draw weights of the example kinds: plain caption text keeps the LM fluent; the grounded kinds teach
# it to read the context in each prompt shape it will meet.
KIND_WEIGHTS = {"caption_text": 1, "caption_request": 2, "conversation": 3, "mvbench_prompt": 4}


@dataclass(frozen=True)
class GroundedItem:
    """One clip's (or image's) caption and, optionally, one instruction record about it."""

    caption: str
    media_type: str
    record: dict | None = None


def corpus_texts(annotation_files: list[str | Path]) -> list[GroundedItem]:
    """Captions paired with the instruction records about the same media, from the annotation files.

    Records without a known caption cannot be grounded and are left out.
    """
    captions: dict[str, str] = {}
    records: list[tuple[str, str, dict]] = []
    for path in annotation_files:
        for record in json.loads(Path(path).read_text()):
            media_type = "video" if "video" in record else "image"
            key = record.get(media_type, "")
            if "caption" in record:
                captions[key] = record["caption"]
            if record.get("QA"):
                records.append((key, media_type, record))
    items = [GroundedItem(caption, "video" if key.endswith((".mp4", ".avi", ".webm")) else "image")
             for key, caption in captions.items()]
    items += [GroundedItem(captions[key], media_type, record) for key, media_type, record in records if key in captions]
    return items


def parse_multiple_choice(question: str, answer: str) -> tuple[str, list[str], int] | None:
    """(question, options, index of the answer) of a `Question: …\\nOptions:\\n(A) …` turn, else None."""
    match = MC_PATTERN.match(question.strip())
    if not match or not answer.startswith("("):
        return None
    options = [line[4:] for line in match["options"].strip().split("\n")]
    letter = answer[1]
    index = ord(letter) - ord("A")
    return (match["question"], options, index) if 0 <= index < len(options) else None


def _shuffled_turn(turn: dict, rng: random.Random) -> dict:
    """The turn with its options in a fresh random order (open questions as they are)."""
    parsed = parse_multiple_choice(turn["q"], turn["a"])
    if parsed is None:
        return turn
    question, options, index = parsed
    order = rng.sample(range(len(options)), len(options))
    shuffled = [options[i] for i in order]
    position = order.index(index)
    return {"i": turn.get("i", ""), "q": qa_template(question, shuffled),
            "a": f"({option_letter(position)}) {options[index]}"}


def _grounded(tokenizer: PreTrainedTokenizerBase, before: str, context: str, after: str,
              spans: list[tuple[int, int]] | None, max_length: int) -> tuple[list[int], list[int]]:
    """Ids and labels of `before + context + after`, tokenized in parts as stages 2-3 split their prompts."""
    pieces = [Segment(before), Segment("<VideoHere>")]
    position = 0
    for start, stop in spans or [(0, len(after))]:
        pieces += [Segment(after[position:start]), Segment(after[start:stop], True)]
        position = stop
    pieces.append(Segment(after[position:]))
    parts = tokenize_conversation(Conversation(tuple(pieces), "<VideoHere>"), tokenizer, max_length)
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    ids = parts["input_ids_before"].tolist() + context_ids + parts["input_ids_after"].tolist()
    labels = [IGNORE_INDEX] * (len(parts["input_ids_before"]) + len(context_ids)) + parts["labels_after"].tolist()
    return ids[:max_length], labels[:max_length]


def kind_pools(items: list[GroundedItem]) -> dict[str, list[GroundedItem]]:
    """The items each example kind draws from: every caption once, records for the QA kinds."""
    captions = [item for item in items if item.record is None]
    records = [item for item in items if item.record is not None]
    multiple_choice = [item for item in records
                       if any(parse_multiple_choice(t["q"], t["a"]) for t in item.record["QA"])]
    return {"caption_text": captions, "caption_request": captions, "conversation": records,
            "mvbench_prompt": multiple_choice}


def render_example(item: GroundedItem, kind: str, tokenizer: PreTrainedTokenizerBase, rng: random.Random,
                   max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels of one draw of `kind` from `item` (an item of that kind's pool)."""
    if kind == "caption_text":
        ids = tokenizer(item.caption, truncation=True, max_length=max_length - 1)["input_ids"] + [tokenizer.eos_token_id]
        return ids, ids
    if kind == "caption_request":
        conversation = build_caption_conversation(item.caption, "vicuna_v0", item.media_type, rng=rng)
        before, after, spans = conversation.split()
        return _grounded(tokenizer, before, item.caption, after, spans, max_length)
    turns = [_shuffled_turn(turn, rng) for turn in item.record["QA"]]
    if kind == "conversation":
        conversation = build_conversation({"QA": turns}, "vicuna_v0", item.media_type, rng=rng)
        before, after, spans = conversation.split()
        return _grounded(tokenizer, before, item.caption, after, spans, max_length)
    if kind != "mvbench_prompt":
        raise ValueError(f"unknown example kind {kind!r}; choose from {sorted(KIND_WEIGHTS)}")
    question, options, index = next(p for p in (parse_multiple_choice(t["q"], t["a"]) for t in turns) if p)
    before, after = build_prompt(question, options).segments
    answer = f"{option_letter(index)}) {options[index]}###"
    return _grounded(tokenizer, before, item.caption, after + answer, [(len(after), len(after) + len(answer))], max_length)


def _batches(items: list[GroundedItem], tokenizer: PreTrainedTokenizerBase, batch_size: int, max_length: int,
             rng: random.Random):
    """Endless batches, one example kind per batch: kinds differ in length, so mixing them pads a lot."""
    pools = {kind: pool for kind, pool in kind_pools(items).items() if pool}
    kinds = list(pools)
    weights = [KIND_WEIGHTS[kind] for kind in kinds]
    while True:
        kind = rng.choices(kinds, weights)[0]
        rows = [render_example(rng.choice(pools[kind]), kind, tokenizer, rng, max_length) for _ in range(batch_size)]
        length = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((batch_size, length), tokenizer.pad_token_id)
        labels = torch.full((batch_size, length), IGNORE_INDEX)
        for i, (ids, row_labels) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(ids)] = torch.tensor(row_labels)
        yield input_ids, (input_ids != tokenizer.pad_token_id).long(), labels


def pretrain_tiny_llama(
    texts: list[GroundedItem],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    config: LLMConfig,
    steps: int = 400,
    batch_size: int = 16,
    lr: float = 3e-3,
    max_length: int = 256,
    seed: int = 0,
) -> Path:
    """Train the tiny Llama on grounded examples of `texts` (see `corpus_texts`) and save it to `out_dir`.

    A directory whose recorded settings match is reused; otherwise the model is trained in a sibling
    directory and moved into place, so an interrupted run never leaves a half-trained model behind.
    """
    out_dir = Path(out_dir)
    settings = {"config": asdict(config), "steps": steps, "batch_size": batch_size, "lr": lr,
                "max_length": max_length, "seed": seed, "texts": len(texts), "kinds": KIND_WEIGHTS}
    recorded = out_dir / SETTINGS_FILE
    if recorded.exists() and json.loads(recorded.read_text())["settings"] == settings:
        return out_dir
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_tiny_llama(config, tokenizer).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    batches = _batches(texts, tokenizer, batch_size, max_length, random.Random(seed))
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
