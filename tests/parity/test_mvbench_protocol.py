"""The model-independent MVBench protocol: tasks, prompts, scorers, results, resume."""

import json

import pytest

from videochat2.eval.mvbench import (
    OFFICIAL_TASKS,
    PredictionLog,
    aggregate,
    answered_keys,
    build_prompt,
    check_ans,
    detect_layout,
    drop_leading_special,
    extract_answer,
    format_table,
    load_predictions,
    load_questions,
    media_fps,
    parse_letter,
    plot_results,
    score_prediction,
)

SYS = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail "
    "and movement of objects, and the action and pose of persons. Based on your observations, "
    "select the best option that accurately addresses the question.\n"
)
QA = "Question: What did the person do?\nOptions:\n(A) Ate the medicine.\n(B) Took the box."
QUESTION, CANDIDATES = "What did the person do?", ["Ate the medicine.", "Took the box."]


# ---------------------------------------------------------------- prompts


def test_vicuna_prompt_is_byte_exact():
    prompt = build_prompt(QUESTION, CANDIDATES, "vicuna_v0")
    assert prompt.text == (
        f"{SYS}###Human: <Video><VideoHere></Video>\n###Human: {SYS}{QA}"
        "\nOnly give the best option.\n###Assistant: Best option:("
    )
    assert prompt.qformer_instruction == SYS
    before, after = prompt.segments
    assert before.endswith("###Human: <Video>") and after.startswith("</Video>\n###Human: ")


def test_mistral_prompt_is_byte_exact():
    prompt = build_prompt(QUESTION, CANDIDATES, "mistral_instruct")
    assert prompt.text == (
        f"{SYS}[INST] <Video><VideoHere></Video> [/INST] [INST] {SYS}{QA}"
        "\nOnly give the best option. [/INST] Best option:("
    )
    assert prompt.qformer_instruction == SYS


def test_phi3_prompt():
    prompt = build_prompt(QUESTION, CANDIDATES, "phi3")
    assert prompt.text == (
        f"<|user|>\n<Video><VideoHere></Video>\n{SYS}{QA}"
        "\nOnly give the best option.<|end|>\n<|assistant|>\nBest option:("
    )


def test_unknown_family_is_rejected():
    with pytest.raises(KeyError, match="vicuna_v0"):
        build_prompt("q", ["a"], "llama9")


def test_answer_extraction_follows_the_generate_path():
    assert drop_leading_special([0, 1, 319, 29897]) == [319, 29897]
    assert drop_leading_special([1, 319]) == [319]
    reply = "A) Ate the medicine.\nmore###Human: x"
    assert extract_answer(reply, "vicuna_v0") == "(A) Ate the medicine."
    assert extract_answer("Assistant:  B) Took\n", "vicuna_v0") == "(B) Took"
    assert extract_answer("C) x</s>junk", "mistral_instruct") == "(C) x"
    assert extract_answer("D<|end|>\n", "phi3") == "(D"
    assert extract_answer("", "vicuna_v0") == "("


# ---------------------------------------------------------------- scorers


@pytest.mark.parametrize(
    "pred, official, letter",
    [
        ("(A) Ate the medicine.", True, "A"),
        ("(A", True, "A"),
        ("(A).", True, "A"),
        ("(", True, None),  # empty continuation: official bug, strict rejects
        ("(.", True, None),  # "." continuation: official bug, strict rejects
        ("(a person walks", True, None),  # correct by accident under the official scorer
        ("(b)", False, None),
        ("(B) Took the box.", False, "B"),
        ("(The answer is (A)", False, None),
        ("(AB", False, None),
        ("(E)", False, None),  # letter outside the 4 options
    ],
)
def test_official_and_strict_scorers(pred, official, letter):
    assert check_ans(pred, "(A) Ate the medicine.") is official
    assert parse_letter(pred, 4) == letter


def test_score_prediction_record(tmp_path):
    question = load_questions(_main_layout(tmp_path))[0]
    empty = score_prediction(question, "(")
    assert empty["correct_official"] and not empty["correct_strict"] and empty["unparsed"]
    missing = score_prediction(question, "(", missing_media=True)
    assert not missing["correct_official"] and missing["missing_media"] and not missing["unparsed"]
    good = score_prediction(question, "(B) Took the box.")
    assert good["correct_official"] and good["correct_strict"] and good["letter"] == "B"


# ---------------------------------------------------------------- layouts

ITEM = {
    "video": "3MSZA.mp4",
    "question": "What did the person do?",
    "candidates": ["Ate the medicine.", "Took the box.", "Sat down.", "Left."],
    "answer": "Took the box.",
    "start": 2.0,
    "end": 6.5,
}


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _main_layout(root):
    for spec in OFFICIAL_TASKS:
        _write(root / "json" / spec.json_name, [ITEM, dict(ITEM, video="other.mp4")])
    return root


def test_main_layout(tmp_path):
    questions = load_questions(_main_layout(tmp_path))
    assert detect_layout(tmp_path) == "main" and len(questions) == 40
    first = questions[0]
    assert first.task == "Action Sequence" and first.index == 0 and first.gold == "B"
    assert first.video == tmp_path / "video" / "star/Charades_v1_480/" / "3MSZA.mp4"
    assert first.bound == (2.0, 6.5)
    assert first.cache_key == ("star/Charades_v1_480/", "3MSZA.mp4", 2.0, 6.5)
    by_task = {q.task: q for q in questions if q.index == 0}
    fine_grained = by_task["Fine-grained Action"].video.parent
    assert fine_grained == tmp_path / "video/Moments_in_Time_Raw/videos"
    assert by_task["Object Existence"].bound is None
    assert by_task["Episodic Reasoning"].media_type == "frame"
    assert media_fps("frame") == 3.0 and media_fps("video") is None
    # same file name, different folders: the cache keys must differ
    assert by_task["Object Existence"].cache_key != by_task["Object Shuffle"].cache_key


def test_task_selection_by_name_or_abbreviation(tmp_path):
    questions = load_questions(_main_layout(tmp_path), tasks=["ER", "Action Count"])
    assert [q.task for q in questions] == ["Episodic Reasoning"] * 2 + ["Action Count"] * 2
    with pytest.raises(KeyError, match="Nope"):
        load_questions(tmp_path, tasks=["Nope"])


def test_answer_not_in_candidates_names_file_and_index(tmp_path):
    _main_layout(tmp_path)
    _write(tmp_path / "json/action_count.json", [ITEM, dict(ITEM, answer="Flew away.")])
    with pytest.raises(ValueError, match=r"action_count\.json item 1: answer 'Flew away\.'"):
        load_questions(tmp_path)


def test_missing_bound_field_is_an_error(tmp_path):
    _main_layout(tmp_path)
    no_end = {k: v for k, v in ITEM.items() if k != "end"}
    _write(tmp_path / "json/action_sequence.json", [no_end])
    with pytest.raises(ValueError, match=r"action_sequence\.json item 0: missing fields \['end'\]"):
        load_questions(tmp_path)


def test_video_branch_layout(tmp_path):
    plain = {k: ITEM[k] for k in ("video", "question", "candidates", "answer")}
    _write(tmp_path / "json/action_sequence.json", [ITEM])  # the video branch ships json/ too
    _write(
        tmp_path / "test.json",
        {
            "root": {
                "Action Sequence": "star/Charades_segment/",
                "Object Shuffle": "perception/videos/",
            },
            "meta": {
                "Action Sequence": [plain],
                "Object Shuffle": [plain, dict(plain, answer="x")],
            },
        },
    )
    assert detect_layout(tmp_path) == "video_branch"
    with pytest.raises(ValueError, match=r"test\.json meta\['Object Shuffle'\] item 1"):
        load_questions(tmp_path)
    first = load_questions(tmp_path, tasks=["AS"])[0]
    assert first.video == tmp_path / "star/Charades_segment/3MSZA.mp4"
    assert first.bound is None
    assert first.cache_key == ("star/Charades_segment/", "3MSZA.mp4", None, None)


def test_tasks_json_takes_precedence(tmp_path):
    _main_layout(tmp_path)
    _write(
        tmp_path / "tasks.json",
        {
            "Color Order": {
                "json": "color.json",
                "prefix": "world/",
                "media_type": "frame",
                "bound": True,
            }
        },
    )
    _write(tmp_path / "json/color.json", [ITEM])
    assert detect_layout(tmp_path) == "tasks_json"
    (question,) = load_questions(tmp_path)
    assert question.task == "Color Order" and question.media_type == "frame"
    assert question.video == tmp_path / "video/world/3MSZA.mp4" and question.bound == (2.0, 6.5)


def test_tasks_json_is_validated(tmp_path):
    bad = {"T": {"json": "t.json", "prefix": "p/", "media_type": "audio"}}
    _write(tmp_path / "tasks.json", bad)
    with pytest.raises(ValueError, match="media_type"):
        load_questions(tmp_path)


def test_unknown_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an MVBench root"):
        load_questions(tmp_path)


# ---------------------------------------------------------------- results


def _record(task, index, correct, strict, k=4, missing=False, unparsed=False):
    return {
        "task": task,
        "index": index,
        "gold": "A",
        "num_candidates": k,
        "prediction": "(A",
        "letter": "A",
        "correct_official": correct,
        "correct_strict": strict,
        "missing_media": missing,
        "unparsed": unparsed,
    }


def _hand_made_records():
    big = [_record("Big", i, correct=i < 3, strict=i < 2) for i in range(4)]
    small = [
        _record("Small", 0, correct=False, strict=False, k=3, missing=True),
        _record("Small", 1, correct=True, strict=False, k=5, unparsed=True),
    ]
    return big + small


def test_aggregate_total_weighted_vs_macro():
    results = aggregate(_hand_made_records(), settings={"frames": 16})
    assert results["n"] == 6
    assert results["avg"] == pytest.approx(100 * 4 / 6)
    assert results["avg_strict"] == pytest.approx(100 * 2 / 6)
    assert results["macro_avg"] == pytest.approx((75.0 + 50.0) / 2)
    assert results["macro_avg_strict"] == pytest.approx((50.0 + 0.0) / 2)
    assert results["avg"] != results["macro_avg"]
    small = results["tasks"]["Small"]
    assert small["n"] == 2 and small["correct"] == 1 and small["acc"] == 50.0
    assert small["chance"] == pytest.approx(100 * (1 / 3 + 1 / 5) / 2)
    assert small["missing_media"] == 1 and small["unparsed"] == 1
    assert results["settings"] == {"frames": 16}
    table = format_table(results)
    assert "Small" in table and "66.67" in table and "62.50" in table


def test_plot_results_writes_png(tmp_path):
    path = tmp_path / "results.png"
    plot_results(aggregate(_hand_made_records()), path, "mvbench of run")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predictions_resume_after_truncated_last_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    with PredictionLog(path) as log:
        log.write(_record("Big", 0, True, True))
        log.write(_record("Big", 1, False, False))
    with path.open("a") as f:
        f.write('{"task": "Big", "index": 2, "gold')  # killed mid-line
    assert answered_keys(path) == {("Big", 0), ("Big", 1)}
    with PredictionLog(path) as log:
        log.write(_record("Big", 2, True, True))
    assert set(load_predictions(path)) == {("Big", 0), ("Big", 1), ("Big", 2)}
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps(_record("Big", 0, True, True)))
    with PredictionLog(path) as log:
        log.write(_record("Big", 1, True, True))
    assert answered_keys(path) == {("Big", 0), ("Big", 1)}


def test_damaged_middle_line_is_an_error(tmp_path):
    path = tmp_path / "predictions.jsonl"
    good = json.dumps(_record("Big", 1, True, True))
    path.write_text('{"task": "Big", "ind\n' + good + "\n")
    with pytest.raises(ValueError, match="line 1"):
        load_predictions(path)
