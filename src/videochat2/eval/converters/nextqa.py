"""NExT-QA multiple choice (github.com/doc-doc/NExT-QA) -> a tasks.json root.

Reads the release's `val.csv` (or `test.csv` with `--annotations`; columns `video`, `frame_count`, `width`,
`height`, `question`, `answer` (the gold option's index), `qid`, `type`, `a0` ... `a4`) and
`map_vid_vidorID.json` ({video: "<folder>/<VidOR id>"}), both found in SRC or SRC/nextqa; videos are
`NExTVideo/<folder>/<VidOR id>.mp4`. One task per question family, as NExT-QA reports: Causal (CW, CH),
Temporal (TN, TC, TP) and Descriptive (DL, DC, DO).
"""

from __future__ import annotations

import csv
from pathlib import Path

from videochat2.eval.converters.common import (
    Conversion,
    Task,
    first_file,
    load_json,
    mc_item,
    option_problem,
    require_file,
)

FAMILIES = {"C": ("Causal", "C"), "T": ("Temporal", "T"), "D": ("Descriptive", "D")}
COLUMNS = ("video", "question", "answer", "qid", "type", "a0", "a1", "a2", "a3", "a4")


def convert(src: Path, annotations: Path | None = None) -> Conversion:
    """NExT-QA questions grouped by family, each pointing at its VidOR video."""
    csv_path = annotations or first_file(src, ("val.csv", "nextqa/val.csv"), "NExT-QA val.csv")
    map_path = first_file(src, ("map_vid_vidorID.json", "nextqa/map_vid_vidorID.json"), "NExT-QA map_vid_vidorID.json")
    video_map = load_json(map_path, "NExT-QA map_vid_vidorID.json", dict)
    tasks = {key: Task(name, abbr, "nextqa/", src / "NExTVideo") for key, (name, abbr) in FAMILIES.items()}
    conversion = Conversion(list(tasks.values()))
    for row in read_csv(csv_path):
        task = tasks.get(row["type"][:1])
        if task is None:
            conversion.skipped[f"unknown question type {row['type']!r}"] += 1
            continue
        if row["video"] not in video_map:
            conversion.skipped["video not in map_vid_vidorID.json"] += 1
            continue
        options = [row[f"a{i}"].strip() for i in range(5)]
        answer = int(row["answer"]) if row["answer"].strip().isdigit() else -1
        problem = option_problem(options, answer)
        if problem:
            conversion.skipped[problem] += 1
            continue
        video = f"{video_map[row['video']]}.mp4"
        extra = {"qid": row["qid"], "type": row["type"], "video_id": row["video"]}
        task.items.append(mc_item(video, row["question"].strip(), options, answer, **extra))
    return conversion


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a NExT-QA csv, after checking it has every column used and every row every field."""
    with require_file(path, "NExT-QA annotations").open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        rows = list(reader)
    for number, row in enumerate(rows, start=2):
        if any(row[c] is None for c in COLUMNS):
            raise ValueError(f"{path} line {number}: fewer fields than the header")
    return rows
