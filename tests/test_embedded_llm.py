"""Grounded pretraining of the embedded LLM: what it reads, what it learns, and its cached directory."""

import json
import random
from pathlib import Path

import pytest

from videochat2.eval.prompts import ANSWER_PREFIX
from videochat2.models.embedded_llm import (
    KIND_WEIGHTS,
    _batches,
    corpus_texts,
    kind_pools,
    parse_multiple_choice,
    pretrain_tiny_llama,
    render_example,
)
from videochat2.models.llm import LLMConfig, load_tokenizer

CORPUS = ["pretrain_video", "pretrain_image", "instruction_video", "instruction_image"]


@pytest.fixture(scope="module")
def world(dirs) -> dict:
    root = dirs["data"] / "synthetic"
    items = corpus_texts([root / "annotations" / f"{name}.json" for name in CORPUS])
    return {"root": root, "items": items, "tokenizer": load_tokenizer(root / "tokenizers" / "llm")}


def learned_text(tokenizer, ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([token for token, label in zip(ids, labels) if label != -100])


def test_records_are_paired_with_the_caption_of_their_media(world) -> None:
    root = world["root"]
    captions = {r["video"]: r["caption"] for r in json.loads((root / "annotations/pretrain_video.json").read_text())}
    records = json.loads((root / "annotations/instruction_video.json").read_text())
    grounded = [item for item in world["items"] if item.record is not None and item.media_type == "video"]
    assert len(grounded) == len(records)
    for item in grounded:
        assert item.caption == captions[item.record["video"]]


def test_multiple_choice_is_parsed_and_open_questions_are_not() -> None:
    parsed = parse_multiple_choice("Question: How often?\nOptions:\n(A) once\n(B) twice", "(B) twice")
    assert parsed == ("How often?", ["once", "twice"], 1)
    assert parse_multiple_choice("How often does it blink?", "Twice.") is None
    assert parse_multiple_choice("Question: How often?\nOptions:\n(A) once", "(C) thrice") is None


def test_mvbench_example_learns_only_the_shuffled_letter_and_its_option(world) -> None:
    tokenizer, rng = world["tokenizer"], random.Random(0)
    item = kind_pools(world["items"])["mvbench_prompt"][0]
    gold = next(parse_multiple_choice(t["q"], t["a"]) for t in item.record["QA"] if t["q"].startswith("Question"))
    answer_text = gold[1][gold[2]]
    letters = set()
    for _ in range(12):
        ids, labels = render_example(item, "mvbench_prompt", tokenizer, rng, 256)
        text, learned = tokenizer.decode(ids), learned_text(tokenizer, ids, labels)
        assert f"<Video>{item.caption}</Video>" in text
        letter = learned[0]
        assert learned == f"{letter}) {answer_text}###"
        assert f"({letter}) {answer_text}\n" in text and text.index(ANSWER_PREFIX) < text.rindex(learned)
        letters.add(letter)
    assert len(letters) > 1, "options must be reshuffled on every draw"


def test_caption_request_learns_the_caption_it_was_shown(world) -> None:
    tokenizer = world["tokenizer"]
    item = kind_pools(world["items"])["caption_request"][0]
    ids, labels = render_example(item, "caption_request", tokenizer, random.Random(0), 256)
    assert learned_text(tokenizer, ids, labels).strip() == f"{item.caption}###"
    assert tokenizer.decode(ids).startswith(f"<s>###Human: <Video>{item.caption}</Video>")


def test_batches_hold_one_kind_and_every_kind_appears(world) -> None:
    tokenizer = world["tokenizer"]
    seen = set()
    for _, (input_ids, mask, labels) in zip(range(40), _batches(world["items"], tokenizer, 4, 256, random.Random(0))):
        assert input_ids.shape == labels.shape == mask.shape
        assert (labels[mask == 0] == -100).all()
        texts = [tokenizer.decode(row[row != tokenizer.pad_token_id]) for row in input_ids]
        kinds = {"mvbench" if ANSWER_PREFIX in t else "other" for t in texts}
        assert len(kinds) == 1
        seen |= kinds
    assert seen == {"mvbench", "other"} and len(KIND_WEIGHTS) == 4


def test_pretraining_saves_a_loadable_model_and_reuses_it(world, tmp_path: Path) -> None:
    config = LLMConfig(preset="tiny_llama", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    out = tmp_path / "llm"
    pretrain_tiny_llama(world["items"], world["root"] / "tokenizers/llm", out, config, steps=2, batch_size=2)
    recorded = json.loads((out / "pretraining.json").read_text())
    assert recorded["settings"]["steps"] == 2 and (out / "config.json").exists()
    stamp = (out / "pretraining.json").stat().st_mtime_ns
    pretrain_tiny_llama(world["items"], world["root"] / "tokenizers/llm", out, config, steps=2, batch_size=2)
    assert (out / "pretraining.json").stat().st_mtime_ns == stamp
