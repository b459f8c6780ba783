"""Our EgoSchema predictions -> the CSV the EgoSchema Kaggle leaderboard scores (`q_uid,answer`, answer 0-4).

`python -m videochat2.eval.converters.egoschema_submission ROOT PREDICTIONS OUT_CSV`: ROOT is the converted
root the predictions were made on (`convert egoschema ... --full` for the leaderboard's 5,031 questions),
PREDICTIONS its `predictions.jsonl`. Every question of ROOT needs a prediction with a letter; one without
(missing media, an unparsed reply) stops the writer with a count unless `--fill-missing` writes option 0 for it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from videochat2.eval.mvbench.results import load_predictions
from videochat2.eval.mvbench.tasks import read_json, read_tasks_json


def question_ids(root: Path) -> dict[tuple[str, int], str]:
    """(task, index) -> q_uid for every question of a converted EgoSchema root."""
    ids = {}
    for spec in read_tasks_json(root / "tasks.json"):
        for index, item in enumerate(read_json(root / "json" / spec.json_name)):
            if "q_uid" not in item:
                raise ValueError(f"{root / 'json' / spec.json_name} item {index}: no q_uid (not an EgoSchema root?)")
            ids[(spec.name, index)] = item["q_uid"]
    return ids


def submission_rows(root: Path, predictions: Path, fill_missing: bool = False) -> list[tuple[str, int]]:
    """(q_uid, option index) per question of `root`, in its order."""
    records = load_predictions(predictions)
    rows, unanswered = [], []
    for key, uid in question_ids(root).items():
        letter = records[key].get("letter") if key in records else None
        if letter is None:
            unanswered.append(uid)
            letter = "A"
        rows.append((uid, ord(letter) - ord("A")))
    if unanswered and not fill_missing:
        raise ValueError(
            f"{predictions}: {len(unanswered)} questions have no predicted letter (e.g. {unanswered[:3]}); "
            "finish the evaluation, or pass --fill-missing to submit option 0 for them"
        )
    return rows


def write_submission(rows: list[tuple[str, int]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["q_uid", "answer"])
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m videochat2.eval.converters.egoschema_submission")
    parser.add_argument("root", type=Path, help="the converted EgoSchema root")
    parser.add_argument("predictions", type=Path, help="predictions.jsonl of an evaluation on that root")
    parser.add_argument("out", type=Path, help="the CSV to write")
    parser.add_argument("--fill-missing", action="store_true", help="option 0 for questions without a letter")
    args = parser.parse_args(argv)
    try:
        rows = submission_rows(args.root, args.predictions, args.fill_missing)
    except (OSError, ValueError) as err:
        sys.exit(f"egoschema_submission: {err}")
    write_submission(rows, args.out)
    print(f"{len(rows)} answers -> {args.out}")


if __name__ == "__main__":
    main()
