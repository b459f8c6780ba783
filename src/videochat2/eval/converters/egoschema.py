"""EgoSchema (github.com/egoschema/EgoSchema) -> a tasks.json root.

Reads the release's `questions.json` (a list of {`q_uid`, `question`, `option 0` ... `option 4`}, 5,031 questions)
and `subset_answers.json` ({q_uid: gold option index}, the 500 public answers); videos are
`videos/<q_uid>.mp4`. By default the root holds the 500-question subset, scored here. `full=True` adds the
other questions as an unlabelled task, answered but not scored, whose predictions
`videochat2.eval.converters.egoschema_submission` turns into the CSV the Kaggle leaderboard scores.
"""

from __future__ import annotations

from pathlib import Path

from videochat2.eval.converters.common import Conversion, Task, load_json, mc_item, option_problem

SUBSET = "EgoSchema subset"
HIDDEN = "EgoSchema hidden"
NUM_OPTIONS = 5


def convert(src: Path, annotations: Path | None = None, full: bool = False) -> Conversion:
    """The subset with answers; with `full`, also the questions whose answers are withheld."""
    questions_path = annotations or src / "questions.json"
    questions = load_json(questions_path, "EgoSchema questions.json", list)
    answers = load_json(src / "subset_answers.json", "EgoSchema subset_answers.json", dict)
    subset = Task(SUBSET, "ES", "egoschema/", src / "videos")
    hidden = Task(HIDDEN, "ESH", "egoschema/", src / "videos", labelled=False)
    conversion = Conversion([subset, hidden])
    seen = set()
    for number, row in enumerate(questions):
        uid, question, options = _row(questions_path, number, row)
        seen.add(uid)
        if uid not in answers and not full:
            continue
        answer = answers.get(uid)
        if answer is not None and not isinstance(answer, int):
            conversion.skipped["answer is not an option index"] += 1
            continue
        problem = option_problem(options, answer)
        if problem:
            conversion.skipped[problem] += 1
            continue
        task = subset if answer is not None else hidden
        task.items.append(mc_item(f"{uid}.mp4", question, options, answer, q_uid=uid))
    conversion.skipped["answer without a question"] += len(set(answers) - seen)
    conversion.skipped = +conversion.skipped
    return conversion


def _row(path: Path, number: int, row: object) -> tuple[str, str, list[str]]:
    keys = ["q_uid", "question"] + [f"option {i}" for i in range(NUM_OPTIONS)]
    missing = [key for key in keys if not isinstance(row, dict) or key not in row]
    if missing:
        raise ValueError(f"{path}: question {number} lacks {missing}")
    return str(row["q_uid"]), str(row["question"]), [str(row[f"option {i}"]) for i in range(NUM_OPTIONS)]
