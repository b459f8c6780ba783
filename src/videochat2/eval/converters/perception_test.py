"""Perception Test multiple-choice video QA (github.com/google-deepmind/perception_test) -> a tasks.json root.

Reads the release's validation annotations, `all_valid.json` or `mc_question_valid.json` (whichever is in SRC,
or `--annotations`): {video id: {"metadata": {"video_id", ...}, "mc_question": [{"id", "question",
"options" (3), "answer_id", "area", "reasoning", "tag"}], ...}}; videos are `videos/<video_id>.mp4`. One task
per skill area (memory, abstraction, physics, semantics). Questions without `answer_id` (the test split's)
are skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

from videochat2.eval.converters.common import Conversion, Task, first_file, load_json, mc_item, option_problem

ANNOTATIONS = ("all_valid.json", "mc_question_valid.json")
FIELDS = ("question", "options", "area")


def convert(src: Path, annotations: Path | None = None) -> Conversion:
    """Perception Test questions grouped by area, in file order."""
    path = annotations or first_file(src, ANNOTATIONS, "Perception Test validation annotations")
    videos = load_json(path, "Perception Test annotations", dict)
    tasks: dict[str, Task] = {}
    conversion = Conversion([])
    for key, entry in videos.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("mc_question", []), list):
            raise ValueError(f"{path}: video {key!r}: expected an object with an 'mc_question' list")
        metadata = entry.get("metadata") if isinstance(entry.get("metadata"), dict) else {}
        video_id = str(metadata.get("video_id", key))
        for number, question in enumerate(entry.get("mc_question", [])):
            missing = [f for f in FIELDS if not isinstance(question, dict) or f not in question]
            if missing:
                raise ValueError(f"{path}: video {key!r} question {number} lacks {missing}")
            answer = question.get("answer_id")
            answer = int(answer) if isinstance(answer, str) and answer.isdigit() else answer
            if answer is None:
                conversion.skipped["no answer_id (test split)"] += 1
                continue
            options = [str(o) for o in question["options"]] if isinstance(question["options"], list) else []
            problem = option_problem(options, answer if isinstance(answer, int) else -1)
            if problem:
                conversion.skipped[problem] += 1
                continue
            area = str(question["area"])
            task = tasks.setdefault(area, Task(area.capitalize(), area[:3].upper(), "perception_test/", src / "videos"))
            extra = {k: question[k] for k in ("id", "reasoning", "tag") if k in question} | {"area": area}
            task.items.append(mc_item(f"{video_id}.mp4", str(question["question"]), options, answer, **extra))
    conversion.tasks = sorted(tasks.values(), key=lambda t: t.name)
    return conversion
