"""The embedded default's language model: a tiny Llama pretrained on the synthetic world's text.

VideoChat2 connects a video encoder to a *pretrained* LLM that stays frozen; a randomly initialised one
could not turn visual tokens into words. The embedded default therefore pretrains its tiny Llama on the
text of the synthetic corpus on first use and saves it as an ordinary Hugging Face directory, so later
stages load it through the same `from_pretrained` path as a real LLM.

A 7B LLM brings two skills to VideoChat2 that a tiny one has to be taught here, so each batch is one of
three kinds of text:

- language: captions and QA turns as text-only Vicuna exchanges, the words stages 2-3 answer with;
- multiple choice in the benchmark's prompt, with the answer written where the visual tokens will stand
  (repeated, as 96 visual tokens carry it many times over) and the options re-ordered on every draw: the
  model learns to point at the option the media slot names, the skill MVBench asks of the LLM. Pointing
  needs two attention hops (option text -> its letter, answer -> matching option), which small models
  learn only after a plateau; the repetition shortens it. Half the time each copy of the long system prompt
  is left out, which halves the cost of those examples and varies how far the options are from the slot;
- caption copying: the caption in the media slot, a caption request, the caption as the answer, so the
  stage-2 caption loss reaches visual tokens that say what the clip shows.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from videochat2.data.conversation import (
    Conversation,
    build_caption_conversation,
    build_choice_conversation,
)
from videochat2.data.formats import MultipleChoice
from videochat2.models.llm import LLMConfig, build_tiny_llama, load_tokenizer
from videochat2.models.videochat2 import IGNORE_INDEX
from videochat2.prompts import SYSTEM_PROMPT

log = logging.getLogger(__name__)

SETTINGS_FILE = "pretraining.json"
# The LLMConfig fields that shape the pretrained weights. Adapter, loading and template settings do not, so
# changing them (e.g. model.llm.lora_r) reuses the pretrained model instead of training it again.
WEIGHT_FIELDS = (
    "dtype",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "max_position_embeddings",
    "initializer_range",
)
LOG_EVERY = 100
TEMPLATE = "vicuna_v0"


@dataclass
class PretrainingText:
    """What the corpus offers each kind of example."""

    texts: list[str]
    choices: list[MultipleChoice]
    captions: list[str]


@dataclass(frozen=True)
class PretrainingSchedule:
    """How long and how hard to train, and the share of each kind of batch (language, choice, copy)."""

    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    max_length: int = 320
    mix: tuple[float, float, float] = (0.25, 0.6, 0.15)
    # The answer is written 1..max_repeats times in the media slot.
    max_repeats: int = 8
    # Chance that each copy of the system prompt is left out of a multiple-choice example.
    drop_system: float = 0.5
    seed: int = 0


def load_pretraining_text(annotation_files: list[str | Path]) -> PretrainingText:
    """Captions, QA turns (as text-only Vicuna exchanges) and MVBench-format items of the annotation files."""
    text = PretrainingText([], [], [])
    for path in annotation_files:
        for record in json.loads(Path(path).read_text()):
            if "caption" in record:
                text.texts.append(record["caption"])
                text.captions.append(record["caption"])
            for turn in record.get("QA", []):
                question = f"{turn.get('i', '')} {turn['q']}".strip()
                text.texts.append(f"###Human: {question} ###Assistant: {turn['a']} ###")
            if "candidates" in record:
                text.choices.append(MultipleChoice(record["question"], tuple(record["candidates"]), record["answer"]))
                text.texts.append(f"###Human: {record['question']} ###Assistant: {record['answer']} ###")
    return text


def _fill_slot(conversation: Conversation, slot: str) -> tuple[str, str]:
    """(prompt, learned text) of a conversation with `slot` written where the media placeholder stands."""
    prompt = "".join(s.text for s in conversation.segments if not s.learned)
    learned = "".join(s.text for s in conversation.segments if s.learned)
    return prompt.replace(conversation.placeholder, slot), learned


def choice_example(
    choice: MultipleChoice, rng: random.Random, max_repeats: int, drop_system: float = 0.0
) -> tuple[str, str]:
    """The benchmark prompt with the answer in the media slot, options re-ordered; learns `X) answer ###`."""
    conversation = build_choice_conversation(choice, TEMPLATE, rng=rng, shuffle=True)
    prompt, learned = _fill_slot(conversation, " ".join([choice.answer] * rng.randint(1, max_repeats)))
    parts = prompt.split(SYSTEM_PROMPT)
    kept = [part + (SYSTEM_PROMPT if rng.random() >= drop_system else "") for part in parts[:-1]]
    return "".join(kept) + parts[-1], learned


def copy_example(caption: str, rng: random.Random) -> tuple[str, str]:
    """A caption request with the caption in the media slot; learns the caption."""
    return _fill_slot(build_caption_conversation(caption, TEMPLATE, rng=rng), caption)


def _batch(
    rows: list[tuple[str, str]], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, mask and labels (-100 outside the learned text, which includes a final EOS)."""
    prompts = tokenizer([p for p, _ in rows])["input_ids"]
    answers = tokenizer([a for _, a in rows], add_special_tokens=False)["input_ids"]
    sequences = [(p + a + [tokenizer.eos_token_id])[:max_length] for p, a in zip(prompts, answers)]
    length = max(map(len, sequences))
    input_ids = torch.full((len(rows), length), tokenizer.pad_token_id)
    labels = torch.full((len(rows), length), IGNORE_INDEX)
    for i, (prompt, sequence) in enumerate(zip(prompts, sequences)):
        input_ids[i, : len(sequence)] = torch.tensor(sequence)
        first = len(prompt) if rows[i][0] else 1
        labels[i, first : len(sequence)] = input_ids[i, first : len(sequence)]
    return input_ids, (input_ids != tokenizer.pad_token_id).long(), labels


def batches(
    text: PretrainingText, tokenizer: PreTrainedTokenizerBase, schedule: PretrainingSchedule, rng: random.Random
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless batches, each of one kind (similar lengths pad little), drawn by `schedule.mix`."""
    kinds = [
        lambda: ("", rng.choice(text.texts)),
        lambda: choice_example(rng.choice(text.choices), rng, schedule.max_repeats, schedule.drop_system),
        lambda: copy_example(rng.choice(text.captions), rng),
    ]
    available = [bool(text.texts), bool(text.choices), bool(text.captions)]
    weights = [w if ok else 0.0 for w, ok in zip(schedule.mix, available)]
    if not any(weights):
        raise ValueError("the pretraining corpus has no text")
    while True:
        make = rng.choices(kinds, weights)[0]
        yield _batch([make() for _ in range(schedule.batch_size)], tokenizer, schedule.max_length)


def loss_on_labels(model: PreTrainedModel, input_ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
    """Next-token loss computing the output layer only where a label is learned (most prompt tokens are not)."""
    hidden = model.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    learned = targets != IGNORE_INDEX
    logits = model.lm_head(hidden[:, :-1][learned])
    return F.cross_entropy(logits.float(), targets[learned])


def weight_settings(config: dict) -> dict:
    return {name: config.get(name) for name in WEIGHT_FIELDS}


def recorded_settings(path: Path) -> dict:
    """The settings a pretrained model was made with; records that list every LLMConfig field still match."""
    settings = json.loads(path.read_text())["settings"]
    return {**settings, "config": weight_settings(settings["config"])}


def pretrain_tiny_llama(
    text: PretrainingText,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    config: LLMConfig,
    schedule: PretrainingSchedule = PretrainingSchedule(),
) -> Path:
    """Train the tiny Llama on `text` and save it (with its tokenizer) to `out_dir`.

    A directory whose recorded settings match is reused; otherwise the model is trained in a sibling
    directory and moved into place, so an interrupted run never leaves a half-trained model behind.
    """
    out_dir = Path(out_dir)
    settings = {
        "config": weight_settings(asdict(config)),
        "schedule": asdict(schedule),
        "texts": len(text.texts),
        "choices": len(text.choices),
        "captions": len(text.captions),
    }
    settings = json.loads(json.dumps(settings))
    recorded = out_dir / SETTINGS_FILE
    if recorded.exists() and recorded_settings(recorded) == settings:
        return out_dir
    torch.manual_seed(schedule.seed)
    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_tiny_llama(config, tokenizer).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / schedule.warmup_steps))
    stream = batches(text, tokenizer, schedule, random.Random(schedule.seed))
    log.info("pretraining the embedded LLM for %d steps on first use; it is kept in %s", schedule.steps, out_dir)
    for step, (input_ids, mask, labels) in zip(range(1, schedule.steps + 1), stream):
        loss = loss_on_labels(model, input_ids, mask, labels)
        if step % LOG_EVERY == 0 or step == schedule.steps:
            log.info("embedded LLM step %d/%d loss %.3f", step, schedule.steps, loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        warmup.step()
        optimizer.zero_grad(set_to_none=True)
    fresh = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(fresh, ignore_errors=True)
    model.eval().save_pretrained(fresh)
    tokenizer.save_pretrained(fresh)
    (fresh / SETTINGS_FILE).write_text(json.dumps({"settings": settings, "final_loss": round(loss.item(), 4)}))
    shutil.rmtree(out_dir, ignore_errors=True)
    fresh.rename(out_dir)
    return out_dir
