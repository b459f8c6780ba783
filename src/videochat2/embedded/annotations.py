"""The annotation files of the video clips: instruction records and MVBench items, in the real formats."""

from __future__ import annotations

import random

from videochat2.data import qa_generation as qa
from videochat2.embedded.captions import CAPTION_PROMPTS
from videochat2.embedded.tasks import TASKS


def _strip(path: str, prefix: str) -> str:
    return path[len(prefix) :]


def _record(ann: dict, prefix: str) -> dict:
    record = {"video": _strip(ann["path"], prefix), "label": ann["label"], **ann["fields"]}
    if ann["distractors"] is not None:
        record["distractors"] = ann["distractors"]
    if ann["bound"] is not None:
        record["start"], record["end"] = ann["bound"]
    return record


def _open_answer(label: str) -> str:
    return label[0].upper() + label[1:] + "."


def _instruction_records(anns: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    """Per clip: an open record (caption + question) and a multiple-choice item in MVBench form."""
    rng = random.Random(seed)
    open_records, choices = [], []
    for task, spec in TASKS.items():
        mine = [a for a in anns if a["task"] == task]
        items, _ = qa.build_items([_record(a, "videos/") for a in mine], spec.qa_task(task), seed=seed)
        for ann, item in zip(mine, items):
            bound = {"start": item["start"], "end": item["end"]} if "start" in item else {}
            choices.append(item)
            open_qa = [
                {"i": "", "q": rng.choice(CAPTION_PROMPTS), "a": ann["caption"]},
                {"i": "", "q": item["question"], "a": _open_answer(item["answer"])},
            ]
            open_records.append({"video": item["video"], "QA": open_qa, **bound})
    return sorted(open_records, key=lambda r: r["video"]), sorted(choices, key=lambda r: r["video"])


def _benchmark(anns: list[dict], seed: int) -> dict[str, list[dict]]:
    out = {}
    for task, spec in TASKS.items():
        records = [_record(a, f"mvbench/video/{spec.prefix}") for a in anns if a["task"] == task]
        out[task], _ = qa.build_items(records, spec.qa_task(task), seed=seed + 1, source=f"synthetic {task}")
    return out


def _tasks_json() -> dict:
    return {
        task: {
            "json": f"{task}.json",
            "prefix": spec.prefix,
            "media_type": spec.media_type,
            "bound": spec.bound,
            "abbr": spec.abbr,
        }
        for task, spec in TASKS.items()
    }
