"""The two MVBench scorers, applied to every prediction.

``official`` reproduces the reference ``check_ans`` with its quirks, so numbers
compare with published ones: only the first space-separated token is compared,
by substring containment in both directions, which makes an empty answer (``"("``
after the prefix), ``"."`` and any reply starting with the gold letter as a word
(``"(a person walks"`` for gold A) count as correct.

``strict`` accepts only an option marker for one letter inside the question's
range (``A``, ``(A``, ``(A)``, ``A.``, ``A:``, ``[A]`` followed by anything) on the
first line; anything else is wrong and counted as unparsed. It is the number to
trust when a model emits junk.
"""

from __future__ import annotations

import re
from typing import Any

from videochat2.eval.mvbench.tasks import MVBenchQuestion

_MARKER = re.compile(r"[\s(\[]*([A-Z])(?:[\s)\].:]*$|[)\].:])")


def check_ans(pred: str, gt_option: str) -> bool:
    """The reference scorer: ``pred`` is ``"(" + first line``, ``gt_option`` ``"(B) text"``."""
    pred_option = pred.lower().split(" ")[0]
    gt_first = gt_option.lower().split(" ")[0]
    return pred_option.replace(".", "") in gt_first or gt_first in pred_option


def parse_letter(pred: str, num_candidates: int) -> str | None:
    """The single option letter ``pred`` commits to, or None when it commits to none."""
    first_line = pred.split("\n")[0]
    match = _MARKER.match(first_line)
    if match is None:
        return None
    letter = match.group(1)
    return letter if ord(letter) - ord("A") < num_candidates else None


def score_prediction(question: MVBenchQuestion, prediction: str | None, missing_media: bool = False) -> dict[str, Any]:
    """One predictions.jsonl record, scored both ways.

    ``prediction`` is the scored string, i.e. ``prompts.extract_answer`` output
    (``"("`` + first line) or, for a letter-logit scorer, ``"(" + letter``.
    A question whose media could not be read keeps its place in the denominator
    and is wrong under both scorers (the official scorer would otherwise accept
    the empty reply), so missing videos lower the score visibly instead of
    silently shrinking the benchmark. A question without a gold letter (an unlabelled task) keeps its
    letter for submission elsewhere and is correct under neither scorer; ``aggregate`` leaves it out.
    """
    text = "" if prediction is None or missing_media else prediction
    letter = None if missing_media else parse_letter(text, len(question.candidates))
    labelled = question.gold is not None
    return {
        "task": question.task,
        "index": question.index,
        "video": str(question.video),
        "gold": question.gold,
        "num_candidates": len(question.candidates),
        "prediction": text,
        "letter": letter,
        "correct_official": labelled and not missing_media and check_ans(text, question.gold_option),
        "correct_strict": labelled and letter == question.gold,
        "missing_media": missing_media,
        "unparsed": not missing_media and letter is None,
    }
