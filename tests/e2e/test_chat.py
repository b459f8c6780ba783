"""Chatting with the small trained stage-3 run: one question, multiple choice, images, several turns."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
import tomllib

from videochat2.chat import ChatSession, cut_at_stop, interactive, main, read_pixels
from videochat2.loader import load_model

# Every test here trains or loads a trained run: the fast lane (`make test-fast`) leaves them out.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loaded(chained_run):
    return load_model(chained_run)


@pytest.fixture(scope="module")
def question(dirs) -> dict:
    """A multiple-choice training item of the synthetic set (MVBench format), with its video."""
    data = dirs["data"] / "synthetic"
    item = json.loads((data / "annotations" / "instruction_video_mc.json").read_text())[0]
    return {"video": data / "videos" / item["video"], "text": item["question"], "options": item["candidates"]}


def test_multiple_choice_answer_is_one_of_the_options(chained_run, question, capsys):
    main(
        [
            "--ckpt",
            str(chained_run),
            "--video",
            str(question["video"]),
            question["text"],
            "--options",
            "|".join(question["options"]),
        ]
    )
    answer = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"\(([A-Z])\) (.+)", answer)
    assert match, answer
    index = ord(match.group(1)) - ord("A")
    assert index < len(question["options"]) and match.group(2) == question["options"][index]


def test_question_about_an_image_gets_a_text_answer(loaded, dirs):
    image = sorted((dirs["data"] / "synthetic" / "images").glob("*.jpg"))[0]
    pixels = read_pixels(image, "image", loaded.spec.media, "middle")
    assert pixels.shape[:2] == (1, 1)
    session = ChatSession(loaded, pixels, "image", {"max_new_tokens": 12, "min_new_tokens": 2})
    answer = session.ask("What colour is the shape?")
    assert isinstance(answer, str) and "###" not in answer
    assert session.history == [{"q": "What colour is the shape?", "a": answer}]


def test_multi_turn_prompt_keeps_earlier_turns(loaded, question):
    pixels = read_pixels(question["video"], "video", loaded.spec.media, "middle")
    assert pixels.shape[1] == loaded.spec.media.num_frames
    session = ChatSession(loaded, pixels, "video", {"max_new_tokens": 6})
    written = []
    lines = iter(["What moves?", "And then?", ""])
    interactive(session, read=lambda prompt: next(lines), write=written.append)
    assert [turn["q"] for turn in session.history] == ["What moves?", "And then?"]
    assert written[1:] == [turn["a"] for turn in session.history]
    before, after, _ = session.prompt("Anything else?")
    assert "<Video>" in before and after.endswith("###Human: Anything else? ###Assistant:")
    assert f"###Human: What moves? ###Assistant: {session.history[0]['a']} ###Human: And then?" in after


def test_console_script_and_module_entry_point(chained_run, question):
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["videochat2-chat"].split(":")
    assert getattr(import_module(module), function) is main
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "videochat2.chat",
            "--ckpt",
            str(chained_run),
            "--video",
            str(question["video"]),
            "--max-new-tokens",
            "4",
            question["text"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("\n") >= 1


def test_answers_end_before_the_end_of_turn_text_even_when_cut_short():
    assert cut_at_stop(" It moves left. ###Human: next", "###") == "It moves left."
    assert cut_at_stop(" It moves left. #", "###") == "It moves left."
    assert cut_at_stop("A red # sign", "###") == "A red # sign"
    assert cut_at_stop(" done</s>", "</s>") == "done"
    assert cut_at_stop(" free text ", None) == "free text"
