"""Evaluation progress: a bar with ETA, and the same numbers written to the log for batch jobs."""

from __future__ import annotations

import logging

from tests.unit.test_eval_mvbench import SPEC, char_tokenizer, tasks_json_root, tiny_model  # noqa: F401
from videochat2.eval.mvbench import load_questions
from videochat2.eval.mvbench.answerers import LetterLogitsAnswerer
from videochat2.eval.mvbench.data import MVBenchCollator, MVBenchDataset
from videochat2.eval.mvbench.run import answer_questions, question_loader
from videochat2.eval.progress import Progress, format_duration


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_durations_read_as_hours_minutes_seconds():
    assert format_duration(0) == "0:00:00"
    assert format_duration(3725.4) == "1:02:05"
    assert format_duration(90000) == "25:00:00"


def test_a_line_is_logged_every_interval_with_rate_and_eta(caplog):
    clock = Clock()
    progress = Progress(100, every_s=30, clock=clock, bar=False)
    with caplog.at_level(logging.INFO, logger="videochat2.eval"):
        clock.now += 10
        progress.update(5)
        assert caplog.messages == []  # 10 s in: too early for a line
        clock.now += 30
        progress.update(15)
        assert caplog.messages == ["questions 20/100 (20%), 0.50/s, elapsed 0:00:40, ETA 0:02:40"]
        clock.now += 5
        progress.update(10)
        assert len(caplog.messages) == 1  # 5 s after the last line
        clock.now += 55
        progress.update(70)
        progress.close()
    assert caplog.messages[-1] == "questions 100/100 (100%), 1.00/s, elapsed 0:01:40, ETA 0:00:00"
    assert len(caplog.messages) == 2  # the last update finished the work: only the closing line follows


def test_answering_writes_its_progress_to_the_log(tasks_json_root, tmp_path, caplog):  # noqa: F811
    tokenizer = char_tokenizer()
    questions = load_questions(tasks_json_root)
    dataset = MVBenchDataset(questions, SPEC, None)
    loader = question_loader(dataset, MVBenchCollator(tokenizer, None, "vicuna_v0"), 4, 0)
    answerer = LetterLogitsAnswerer(tiny_model(tokenizer), tokenizer)
    with caplog.at_level(logging.INFO, logger="videochat2.eval"):
        written = answer_questions(loader, answerer, "letter_logits", tmp_path / "p.jsonl", total=len(questions))
    assert written == len(questions) == 9
    assert caplog.messages[-1].startswith("questions 9/9 (100%), ")
