"""The model-independent MVBench protocol in one import.

Tasks and questions (``tasks``), the official and strict scorers (``scoring``) and the run's outputs
(``results``) live in their own modules, prompts and answer extraction in ``videochat2.prompts`` (training
builds the same prompts); ``data``, ``answerers`` and ``run`` turn them into an evaluation.
Frame indices are in ``videochat2.data.frame_indices``.
"""

from videochat2.eval.mvbench.results import (
    PredictionLog,
    aggregate,
    answered_keys,
    format_table,
    load_predictions,
    plot_results,
    write_results,
)
from videochat2.eval.mvbench.scoring import check_ans, parse_letter, score_prediction
from videochat2.eval.mvbench.tasks import (
    OFFICIAL_TASKS,
    VIDEO_BRANCH_PREFIXES,
    MVBenchQuestion,
    TaskSpec,
    detect_layout,
    iter_questions,
    load_questions,
    media_fps,
    read_tasks_json,
    video_branch_tasks,
)
from videochat2.prompts import (
    ANSWER_PREFIX,
    PROMPT_FAMILIES,
    QUESTION_SUFFIX,
    SYSTEM_PROMPT,
    MVBenchPrompt,
    build_prompt,
    drop_leading_special,
    extract_answer,
    qa_template,
)

__all__ = [
    "ANSWER_PREFIX",
    "OFFICIAL_TASKS",
    "PROMPT_FAMILIES",
    "QUESTION_SUFFIX",
    "SYSTEM_PROMPT",
    "VIDEO_BRANCH_PREFIXES",
    "MVBenchPrompt",
    "MVBenchQuestion",
    "PredictionLog",
    "TaskSpec",
    "aggregate",
    "answered_keys",
    "build_prompt",
    "check_ans",
    "detect_layout",
    "drop_leading_special",
    "extract_answer",
    "format_table",
    "iter_questions",
    "load_predictions",
    "load_questions",
    "media_fps",
    "parse_letter",
    "plot_results",
    "qa_template",
    "read_tasks_json",
    "score_prediction",
    "video_branch_tasks",
    "write_results",
]
