"""The Python API a notebook uses: `ChatSession.from_pretrained`, `watch`, `ask`, `choose`, `answer_batch`,
and the examples of docs/api.md, run as written against the small trained run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videochat2 import ChatSession, Choice
from videochat2.chat import read_pixels

# Every test here trains or loads a trained run: the fast lane (`make test-fast`) leaves them out.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Forcing eight new tokens makes the free-text answers long enough for a batching mistake to show.
GENERATION = {"max_new_tokens": 8, "min_new_tokens": 8}


@pytest.fixture(scope="module")
def chat(chained_run) -> ChatSession:
    return ChatSession.from_pretrained(chained_run, device="cpu", **GENERATION)


@pytest.fixture(scope="module")
def media(dirs) -> dict:
    """Three multiple-choice training items (MVBench format) with their videos, and two images."""
    data = dirs["data"] / "synthetic"
    items = json.loads((data / "annotations" / "instruction_video_mc.json").read_text())[:3]
    return {
        "videos": [data / "videos" / item["video"] for item in items],
        "questions": [item["question"] for item in items],
        "options": [item["candidates"] for item in items],
        "images": sorted((data / "images").glob("*.jpg"))[:2],
    }


def one_at_a_time(chat: ChatSession, clips, questions, options=None) -> list:
    fresh = [ChatSession(chat.loaded, generation=chat.generation).watch(clip) for clip in clips]
    if options is None:
        return [session.ask(q) for session, q in zip(fresh, questions)]
    return [session.choose(q, o) for session, q, o in zip(fresh, questions, options)]


def test_choose_returns_the_option_with_its_letter_probabilities(chat, media):
    choice = chat.watch(media["videos"][0]).choose(media["questions"][0], media["options"][0])
    assert isinstance(choice, Choice) and choice.option == media["options"][0][choice.index]
    assert str(choice) == f"({'ABC'[choice.index]}) {choice.option}"
    assert (
        len(choice.probs) == 3 and abs(sum(choice.probs) - 1) < 1e-4 and max(choice.probs) == choice.probs[choice.index]
    )


def test_watch_starts_a_new_conversation_and_takes_transformed_frames(chat, media):
    chat.watch(media["videos"][0])
    chat.ask("What moves?")
    assert len(chat.history) == 1
    pixels = read_pixels(media["videos"][1], "video", chat.loaded.spec.media, "middle")
    by_tensor = chat.watch(pixels[0]).choose(media["questions"][1], media["options"][1])
    assert chat.history == [] and chat.media_type == "video"
    assert by_tensor == chat.watch(media["videos"][1]).choose(media["questions"][1], media["options"][1])


def test_answer_batch_answers_each_clip_as_if_asked_alone(chat, media):
    clips = [*media["videos"], *media["images"]]  # videos and images: two shapes, batched apart
    questions = [*media["questions"], "What colour is the shape?", "What shape is it?"]
    texts = chat.answer_batch(clips, questions, batch_size=2)
    assert texts == one_at_a_time(chat, clips, questions)
    assert all(isinstance(t, str) and "###" not in t for t in texts)
    options = [*media["options"], ["red", "blue", "green"], ["circle", "square"]]
    picks = chat.answer_batch(clips, questions, options=options, batch_size=4)
    alone = one_at_a_time(chat, clips, questions, options)
    assert [p.index for p in picks] == [a.index for a in alone]
    assert all(torch.allclose(torch.tensor(p.probs), torch.tensor(a.probs), atol=1e-4) for p, a in zip(picks, alone))


def test_answer_batch_refuses_lists_that_do_not_line_up(chat, media):
    with pytest.raises(ValueError, match="2 clips but 1 questions"):
        chat.answer_batch(media["videos"][:2], ["What moves?"])
    with pytest.raises(ValueError, match="2 questions but 1 option lists"):
        chat.answer_batch(media["videos"][:2], ["a", "b"], options=[["x", "y"]])
    with pytest.raises(ValueError, match="a list of strings, one per clip"):
        chat.answer_batch(media["videos"][:1], "What moves?")


def test_asking_before_watching_says_what_to_do(chat):
    with pytest.raises(ValueError, match=r"call watch\(path\) first"):
        ChatSession(chat.loaded).ask("What moves?")


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a page, in order (```py blocks are shown, not run)."""
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def test_the_api_page_examples_run_as_written(chained_run, media, tmp_path):
    """docs/api.md's blocks, run in one process from a folder holding the media they name; the run they
    call `outputs/default` is the trained run (whose stages know it by its own name and place)."""
    (tmp_path / "clip.mp4").symlink_to(media["videos"][0])
    (tmp_path / "other.mp4").symlink_to(media["videos"][1])
    (tmp_path / "photo.jpg").symlink_to(media["images"][0])
    blocks = python_blocks((REPO / "docs" / "api.md").read_text())
    assert len(blocks) >= 3
    code = "\n".join(blocks).replace('"outputs/default"', repr(str(chained_run)))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^\([AB]\) a (circle|square)$", result.stdout, flags=re.M), result.stdout
    assert (tmp_path / "exported" / "videochat2-tiny" / "README.md").is_file()
    assert (tmp_path / "exported" / "copy" / "config.json").is_file()
