"""MLVU dev set, multiple-choice tasks (MLVU/MVLU on the Hugging Face Hub) -> a tasks.json root.

Reads the release's `json/1_plotQA.json` ... `json/7_topic_reasoning.json`: lists of {`video`, `duration`,
`question`, `candidates`, `answer` (the gold option's text), `question_type`}; videos are
`video/<json stem>/<video>` (e.g. `video/1_plotQA/`; `video/plotQA/` is also found). The two generation tasks
(8_sub_scene, 9_summary) are not multiple choice and are not converted. MLVU's M-Avg is the macro average.
"""

from __future__ import annotations

from pathlib import Path

from videochat2.eval.converters.common import Conversion, Task, load_json, mc_item, option_problem

# (json stem, task name, abbreviation), in MLVU's numbering.
TASKS = (
    ("1_plotQA", "Plot QA", "PQA"),
    ("2_needle", "Needle QA", "NQA"),
    ("3_ego", "Ego Reasoning", "ER"),
    ("4_count", "Action Count", "AC"),
    ("5_order", "Action Order", "AO"),
    ("6_anomaly_reco", "Anomaly Recognition", "AR"),
    ("7_topic_reasoning", "Topic Reasoning", "TR"),
)
FIELDS = ("video", "question", "candidates", "answer")


def convert(src: Path, annotations: Path | None = None) -> Conversion:
    """The seven multiple-choice tasks; `annotations` names another folder of the same json files."""
    json_dir = annotations or src / "json"
    conversion = Conversion([])
    for stem, name, abbr in TASKS:
        path = json_dir / f"{stem}.json"
        items = load_json(path, f"MLVU {stem}.json", list)
        task = Task(name, abbr, f"{stem}/", media_dir(src / "video", stem))
        for number, item in enumerate(items):
            missing = [f for f in FIELDS if not isinstance(item, dict) or f not in item]
            if missing:
                raise ValueError(f"{path}: item {number} lacks {missing}")
            options = [str(c) for c in item["candidates"]] if isinstance(item["candidates"], list) else []
            answer = options.index(str(item["answer"])) if str(item["answer"]) in options else None
            problem = "answer is not among the candidates" if answer is None else option_problem(options, answer)
            if problem:
                conversion.skipped[problem] += 1
                continue
            extra = {k: item[k] for k in ("duration", "question_type") if k in item}
            task.items.append(mc_item(str(item["video"]), str(item["question"]), options, answer, **extra))
        conversion.tasks.append(task)
    return conversion


def media_dir(video_root: Path, stem: str) -> Path:
    """`video/<stem>`, or `video/<stem without its number>` where only that one exists."""
    plain = video_root / stem.split("_", 1)[1]
    return plain if plain.is_dir() and not (video_root / stem).is_dir() else video_root / stem
