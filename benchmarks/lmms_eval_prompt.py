"""MVBench as lmms-eval 0.7 asks it, run through the lmms-eval adapter on any MVBench-format root.

    python benchmarks/lmms_eval_prompt.py --ckpt outputs/default            # the embedded benchmark
    python benchmarks/lmms_eval_prompt.py --ckpt exported/ --root /data/MVBench/video --num-frames 16

lmms-eval's `mvbench` tasks download the benchmark from the Hub; this script builds the same requests from
the questions on disk instead (no lmms-eval, no download), so its prompt can be set beside the official one
(`python eval.py eval.answerer=generate`). What lmms-eval 0.7.3 does, restated here (its tasks/mvbench files):

- text: "Question:" + question + "\\nOption:\\n" + "(A) option\\n" per option + "Only give the best option.\\n";
  no system prompt, no `Best option:(` answer prefix; the model's own chat template wraps it;
- generation: greedy, at most 16 new tokens, cut at "\\n\\n" (the task's default `until`);
- scoring: a reply "X. ..." gives letter X; otherwise the reply, stripped of punctuation, gives the first
  standalone letter A-E (case-insensitive, so the article "a" counts as A), else the text itself; a task's
  accuracy counts only the replies that are not empty after that processing.
"""

from __future__ import annotations

import argparse
import json
import re
import string
from collections import defaultdict
from pathlib import Path

from videochat2.eval.mvbench.tasks import MVBenchQuestion, load_questions
from videochat2.integrations.lmms_adapter import LmmsAdapter

POST_PROMPT = "Only give the best option.\n"
GENERATION = {"max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False}
UNTIL = ["\n\n"]
PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
LETTER_DOT = re.compile(r"^([A-E])\.\s*(.+)$", re.IGNORECASE)
DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
LONE_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
LONE_LETTER = re.compile(r"\b([A-E])\b", re.IGNORECASE)


def lmms_eval_text(question: str, candidates: list[str] | tuple[str, ...]) -> str:
    """lmms-eval's mvbench doc_to_text."""
    options = "".join(f"({string.ascii_uppercase[i]}) {c}\n" for i, c in enumerate(candidates))
    return f"Question:{question}\nOption:\n{options}{POST_PROMPT}"


def strip_punctuation(text: str) -> str:
    for mark in PUNCTUATION:
        spaced = f"{mark} " in text or f" {mark}" in text or DIGIT_COMMA.search(text) is not None
        text = text.replace(mark, "" if spaced else " ")
    return LONE_PERIOD.sub("", text)


def lmms_eval_letter(reply: str) -> str:
    """What lmms-eval's mvbench scorer reads from a reply: a letter, or the processed text when none."""
    match = LETTER_DOT.match(reply.strip())
    if match:
        return match.group(1).upper()
    text = strip_punctuation(reply.replace("\n", " ").replace("\t", " ").strip())
    text = text.strip("'").strip('"').strip(")").strip("(").strip().lower()
    letter = LONE_LETTER.search(text)
    return letter.group(1).upper() if letter else text


def score(questions: list[MVBenchQuestion], replies: list[str]) -> dict:
    """Per-task accuracy as lmms-eval aggregates it (over non-empty replies), its macro and total averages."""
    tasks: dict[str, dict] = defaultdict(lambda: {"n": 0, "answered": 0, "correct": 0})
    for question, reply in zip(questions, replies):
        read = lmms_eval_letter(reply)
        row = tasks[question.task]
        row["n"] += 1
        row["answered"] += read != ""
        row["correct"] += read == question.gold
    for row in tasks.values():
        row["acc"] = round(100 * row["correct"] / row["answered"], 2) if row["answered"] else 0.0
    answered = sum(r["answered"] for r in tasks.values())
    return {
        "tasks": dict(tasks),
        "macro_acc": round(sum(r["acc"] for r in tasks.values()) / len(tasks), 2),
        "total_acc": round(100 * sum(r["correct"] for r in tasks.values()) / answered, 2) if answered else 0.0,
    }


class Request:
    """The part of lmms-eval's Instance the adapter reads."""

    def __init__(self, *args):
        self.args = args


def run(adapter: LmmsAdapter, questions: list[MVBenchQuestion]) -> list[str]:
    """Every question as one lmms-eval generate_until request, answered in one call as lmms-eval does."""
    docs = [{"video": str(q.video), "question": q.question, "candidates": list(q.candidates)} for q in questions]
    adapter.task_dict = {"mvbench": {"test": docs}}

    def doc_to_visual(doc):
        return [doc["video"]]

    requests = [
        Request(
            lmms_eval_text(d["question"], d["candidates"]),
            {**GENERATION, "until": UNTIL},
            doc_to_visual,
            i,
            "mvbench",
            "test",
        )
        for i, d in enumerate(docs)
    ]
    return adapter.generate_until(requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="run, stage or export directory (as lmms-eval's pretrained=)")
    parser.add_argument("--root", default="data/synthetic/mvbench", help="an MVBench-format root")
    parser.add_argument("--num-frames", type=int, help="frames per clip (default: as trained)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", help="write the replies and scores to this JSON file")
    args = parser.parse_args()
    questions = load_questions(args.root)
    adapter = LmmsAdapter(args.ckpt, device=args.device, num_frames=args.num_frames, batch_size=args.batch_size)
    replies = run(adapter, questions)
    results = score(questions, replies)
    for task, row in sorted(results["tasks"].items()):
        print(f"{task:28s} {row['acc']:6.2f}  ({row['correct']}/{row['answered']} answered of {row['n']})")
    print(f"{'macro':28s} {results['macro_acc']:6.2f}\n{'total':28s} {results['total_acc']:6.2f}")
    if args.out:
        keys = [{"task": q.task, "index": q.index, "gold": q.gold} for q in questions]
        rows = [{**k, "reply": r, "read": lmms_eval_letter(r)} for k, r in zip(keys, replies)]
        Path(args.out).write_text(json.dumps({**results, "predictions": rows}, indent=1))


if __name__ == "__main__":
    main()
