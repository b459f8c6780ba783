"""Each benchmark converter on a small copy of its release's real file layout, and the converted root through
the MVBench loader, the prompt and the frame reader."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_video
from tests.unit.test_eval_mvbench import char_tokenizer, run, tiny_model
from videochat2.eval.convert import main as convert_main
from videochat2.eval.converters import egoschema, mlvu, nextqa, perception_test, videomme, write_root
from videochat2.eval.converters.egoschema_submission import main as submission_main
from videochat2.eval.mvbench import aggregate, load_questions, score_prediction
from videochat2.eval.mvbench.data import FrameSpec, MVBenchCollator, MVBenchDataset
from videochat2.eval.mvbench.results import PredictionLog


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def placeholder(path: Path) -> None:
    """An empty file where the converters only need the video to exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def by_task(root: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    for question in load_questions(root):
        out.setdefault(question.task, []).append(question)
    return out


# Video-MME: the parquet's rows (here as the JSON export), data/<videoID>.mp4, subtitle/<videoID>.srt.
SRT = (
    "\ufeff1\r\n00:00:00,000 --> 00:00:02,500\r\n"
    '<font color="white" size=".72c">hello there</font>\r\n\r\n'
    "2\r\n00:00:02,500 --> 00:00:04,000\r\n"
    '<font color="white" size=".72c">hello there</font>\r\n\r\n'
    "3\r\n00:00:04,000 --> 00:00:06,000\r\n"
    '<font color="white" size=".72c">the cat jumps</font>\r\n'
)


def videomme_row(vid: str, duration: str, number: int, answer: str, options: list[str] | None = None) -> dict:
    return {
        "video_id": f"{number:03d}",
        "duration": duration,
        "domain": "Knowledge",
        "sub_category": "Astronomy",
        "url": f"https://www.youtube.com/watch?v={vid}",
        "videoID": vid,
        "question_id": f"{number:03d}-1",
        "task_type": "Counting Problem",
        "question": f"How many cats in {vid}?",
        "options": options or ["A. One.", "B. Two.", "C. Three.", "D. Four."],
        "answer": answer,
    }


@pytest.fixture
def videomme_src(tmp_path: Path) -> Path:
    src = tmp_path / "Video-MME"
    rows = [
        videomme_row("vidShort", "short", 1, "C"),
        videomme_row("vidLong", "long", 2, "A"),
        videomme_row("vidLong", "long", 3, "E"),  # no option E: skipped
        videomme_row("vidMed", "medium", 4, "B", ["A. x", "B. x", "C. y", "D. z"]),  # repeated options: skipped
        videomme_row("vidMed", "epic", 5, "B"),  # unknown duration: skipped
    ]
    write_json(src / "videomme" / "test.json", rows)
    for vid in ("vidShort", "vidLong"):
        placeholder(src / "data" / f"{vid}.mp4")
    (src / "subtitle").mkdir()
    (src / "subtitle" / "vidShort.srt").write_text(SRT, encoding="utf-8")
    return src


def test_videomme_keeps_option_order_and_gold_letters_and_counts_skips(videomme_src, tmp_path):
    conversion = videomme.convert(videomme_src, videomme_src / "videomme" / "test.json")
    report = write_root(tmp_path / "out", conversion)
    assert report.questions == {"Short videos": 1, "Long videos": 1}
    assert report.skipped == {
        "answer index out of range": 1,
        "options repeat (the gold letter would be ambiguous)": 1,
        "duration not short/medium/long: 'epic'": 1,
    }
    assert report.missing_media == 0
    tasks = by_task(tmp_path / "out")
    short, long_ = tasks["Short videos"][0], tasks["Long videos"][0]
    assert short.candidates == ("One.", "Two.", "Three.", "Four.") and short.gold == "C"
    assert long_.gold == "A" and long_.answer == "One."
    assert short.video.resolve() == (videomme_src / "data" / "vidShort.mp4").resolve()
    assert short.context is None


def test_videomme_subtitles_go_into_the_prompt_before_the_question(videomme_src, tmp_path):
    conversion = videomme.convert(videomme_src, videomme_src / "videomme" / "test.json", subtitles=True)
    report = write_root(tmp_path / "out", conversion)
    assert report.notes == {"videos without a subtitle file": 1}
    tasks = by_task(tmp_path / "out")
    short, long_ = tasks["Short videos"][0], tasks["Long videos"][0]
    assert short.context == "This video's subtitles are listed below:\nhello there\nthe cat jumps"
    assert long_.context == "This video's subtitles are listed below:\nNo subtitles available"
    prompt = MVBenchCollator(None, None, "vicuna_v0").prompt(short).text
    assert (
        "the question.\nThis video's subtitles are listed below:\nhello there\nthe cat jumps\nQuestion: How" in prompt
    )
    plain = videomme.convert(videomme_src, videomme_src / "videomme" / "test.json")
    write_root(tmp_path / "plain", plain)
    assert (
        "subtitles"
        not in MVBenchCollator(None, None, "vicuna_v0").prompt(by_task(tmp_path / "plain")["Short videos"][0]).text
    )


def test_videomme_subtitles_can_be_cut_to_their_first_words(videomme_src):
    context = videomme.subtitle_context(videomme_src / "subtitle" / "vidShort.srt", max_words=3)
    assert context.splitlines()[1:] == ["hello there", "the"]


def test_videomme_reads_the_release_parquet_or_its_json_lines(videomme_src, tmp_path):
    rows = json.loads((videomme_src / "videomme" / "test.json").read_text())
    jsonl = videomme_src / "videomme" / "test.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert sum(len(t.items) for t in videomme.convert(videomme_src, jsonl).tasks) == 2
    parquet_path = videomme_src / "videomme" / "test-00000-of-00001.parquet"
    if importlib.util.find_spec("pyarrow") is None:
        parquet_path.write_bytes(b"PAR1")
        with pytest.raises(ImportError, match="needs pyarrow"):
            videomme.convert(videomme_src)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), parquet_path)
    assert sum(len(t.items) for t in videomme.convert(videomme_src).tasks) == 2


# EgoSchema: questions.json, subset_answers.json, videos/<q_uid>.mp4.
def ego_question(uid: str, options: list[str] | None = None) -> dict:
    options = options or [f"c does thing {i} in {uid}" for i in range(5)]
    return {"q_uid": uid, "google_drive_id": "x", "question": f"What is c doing in {uid}?"} | {
        f"option {i}": text for i, text in enumerate(options)
    }


@pytest.fixture
def egoschema_src(tmp_path: Path) -> Path:
    src = tmp_path / "EgoSchema"
    questions = [ego_question(f"uid-{i}") for i in range(4)] + [ego_question("uid-dup", ["same"] * 5)]
    write_json(src / "questions.json", questions)
    write_json(src / "subset_answers.json", {"uid-0": 3, "uid-2": 0, "uid-dup": 1, "uid-gone": 2})
    for i in range(4):
        placeholder(src / "videos" / f"uid-{i}.mp4")
    return src


def test_egoschema_subset_is_scored_and_the_full_set_adds_an_unlabelled_task(egoschema_src, tmp_path):
    report = write_root(tmp_path / "subset", egoschema.convert(egoschema_src))
    assert report.questions == {"EgoSchema subset": 2}
    assert report.skipped == {"options repeat (the gold letter would be ambiguous)": 1, "answer without a question": 1}
    subset = by_task(tmp_path / "subset")["EgoSchema subset"]
    assert [(q.gold, q.answer) for q in subset] == [("D", "c does thing 3 in uid-0"), ("A", "c does thing 0 in uid-2")]

    write_root(tmp_path / "full", egoschema.convert(egoschema_src, full=True))
    tasks = by_task(tmp_path / "full")
    assert [q.video.name for q in tasks["EgoSchema hidden"]] == ["uid-1.mp4", "uid-3.mp4"]
    assert all(q.gold is None and len(q.candidates) == 5 for q in tasks["EgoSchema hidden"])


def write_predictions(root: Path, path: Path, letters: dict[str, str | None]) -> None:
    """predictions.jsonl as an evaluation writes it: one scored record per question (None: media missing)."""
    with PredictionLog(path) as log:
        for question in load_questions(root):
            letter = letters[question.video.stem]
            log.write(score_prediction(question, f"({letter})" if letter else None, missing_media=letter is None))


def test_egoschema_submission_is_the_kaggle_csv_of_every_question(egoschema_src, tmp_path, capsys):
    root = tmp_path / "full"
    write_root(root, egoschema.convert(egoschema_src, full=True))
    predictions = tmp_path / "predictions.jsonl"
    write_predictions(root, predictions, {"uid-0": "D", "uid-2": "B", "uid-1": "E", "uid-3": "A"})
    submission_main([str(root), str(predictions), str(tmp_path / "sub.csv")])
    with (tmp_path / "sub.csv").open() as file:
        rows = list(csv.reader(file))
    assert rows == [["q_uid", "answer"], ["uid-0", "3"], ["uid-2", "1"], ["uid-1", "4"], ["uid-3", "0"]]
    results = aggregate(json.loads(line) for line in predictions.read_text().splitlines())
    assert results["n"] == 2 and results["avg"] == 50.0 and results["unlabelled"] == {"EgoSchema hidden": 2}


def test_egoschema_submission_refuses_questions_without_a_letter_unless_told(egoschema_src, tmp_path):
    root = tmp_path / "full"
    write_root(root, egoschema.convert(egoschema_src, full=True))
    predictions = tmp_path / "predictions.jsonl"
    write_predictions(root, predictions, {"uid-0": "D", "uid-2": "B", "uid-1": None, "uid-3": "A"})
    with pytest.raises(SystemExit, match=r"1 questions have no predicted letter \(e.g. \['uid-1'\]\)"):
        submission_main([str(root), str(predictions), str(tmp_path / "sub.csv")])
    submission_main([str(root), str(predictions), str(tmp_path / "sub.csv"), "--fill-missing"])
    assert "uid-1,0" in (tmp_path / "sub.csv").read_text().splitlines()


# NExT-QA: val.csv, map_vid_vidorID.json, NExTVideo/<folder>/<vidor id>.mp4 (real tiny videos here).
NEXTQA_COLUMNS = ["video", "frame_count", "width", "height", "question", "answer", "qid", "type"]
NEXTQA_COLUMNS += [f"a{i}" for i in range(5)]


def nextqa_row(video: str, qid: int, kind: str, answer: str) -> list[str]:
    options = [f"option {i} of {video}" for i in range(5)]
    return [video, "300", "64", "48", f"why did the boy in {video} fall", answer, str(qid), kind, *options]


@pytest.fixture
def nextqa_src(tmp_path: Path) -> Path:
    src = tmp_path / "NExT-QA"
    (src / "nextqa").mkdir(parents=True)
    rows = [
        nextqa_row("4010069381", 0, "CW", "2"),
        nextqa_row("4010069381", 1, "TN", "4"),
        nextqa_row("2435100235", 2, "DC", "0"),
        nextqa_row("9999999999", 3, "CH", "1"),  # not in the map: skipped
        nextqa_row("2435100235", 4, "XX", "1"),  # unknown type: skipped
    ]
    with (src / "nextqa" / "val.csv").open("w", newline="") as file:
        csv.writer(file).writerows([NEXTQA_COLUMNS, *rows])
    write_json(
        src / "nextqa" / "map_vid_vidorID.json", {"4010069381": "0000/4010069381", "2435100235": "1001/2435100235"}
    )
    rng = np.random.default_rng(0)
    for name in ("0000/4010069381", "1001/2435100235"):
        write_video(src / "NExTVideo" / f"{name}.mp4", rng.integers(0, 255, (12, 48, 64, 3), dtype=np.uint8))
    return src


def test_nextqa_groups_questions_by_family_and_counts_skips(nextqa_src, tmp_path):
    report = write_root(tmp_path / "out", nextqa.convert(nextqa_src))
    assert report.questions == {"Causal": 1, "Temporal": 1, "Descriptive": 1}
    assert report.skipped == {"video not in map_vid_vidorID.json": 1, "unknown question type 'XX'": 1}
    tasks = by_task(tmp_path / "out")
    assert [tasks[t][0].gold for t in ("Causal", "Temporal", "Descriptive")] == ["C", "E", "A"]
    assert tasks["Temporal"][0].candidates == tuple(f"option {i} of 4010069381" for i in range(5))


def test_a_converted_root_goes_through_the_loader_prompt_and_frame_reader(nextqa_src, tmp_path):
    """The whole path: the command, the links to the release's videos, the task loader, the frames."""
    out = tmp_path / "NExTQA"
    convert_main(["nextqa", str(nextqa_src), str(out)])
    assert (out / "video" / "nextqa").is_symlink()
    questions = load_questions(out, ["Causal", "D"])
    assert [q.task for q in questions] == ["Causal", "Descriptive"]
    dataset = MVBenchDataset(questions, FrameSpec(num_frames=4, image_size=32))
    items = [dataset[i] for i in range(len(dataset))]
    assert all(item["error"] is None and item["pixel_values"].shape == (4, 3, 32, 32) for item in items)
    assert items[0]["pixel_values"].std() > 0
    prompt = MVBenchCollator(None, None, "vicuna_v0").prompt(questions[0]).text
    assert "Question: why did the boy in 4010069381 fall\nOptions:\n(A) option 0 of 4010069381" in prompt


# Perception Test: all_valid.json, videos/<video_id>.mp4.
def pt_question(qid: int, area: str, answer: int | None) -> dict:
    question = {
        "id": qid,
        "question": f"What happens {qid}?",
        "options": [f"a{qid}", f"b{qid}", f"c{qid}"],
        "area": area,
        "reasoning": "descriptive",
        "tag": ["motion"],
    }
    return question | ({"answer_id": answer} if answer is not None else {})


def test_perception_test_groups_by_area_and_skips_questions_without_answers(tmp_path):
    src = tmp_path / "perception_test"
    write_json(
        src / "all_valid.json",
        {
            "video_10909": {
                "metadata": {"video_id": "video_10909", "split": "valid", "num_frames": 300},
                "mc_question": [pt_question(0, "memory", 2), pt_question(1, "physics", 0)],
                "object_tracking": [],
            },
            "video_20": {"metadata": {"video_id": "video_20"}, "mc_question": [pt_question(2, "memory", None)]},
        },
    )
    placeholder(src / "videos" / "video_10909.mp4")
    report = write_root(tmp_path / "out", perception_test.convert(src))
    assert report.questions == {"Memory": 1, "Physics": 1}
    assert report.skipped == {"no answer_id (test split)": 1}
    tasks = by_task(tmp_path / "out")
    assert (tasks["Memory"][0].gold, tasks["Memory"][0].answer) == ("C", "c0")
    assert tasks["Physics"][0].video.name == "video_10909.mp4"


# MLVU: json/<n>_<task>.json, video/<n>_<task>/.
def test_mlvu_converts_the_seven_choice_tasks_and_skips_answers_outside_the_candidates(tmp_path):
    src = tmp_path / "MLVU"
    for stem, _, _ in mlvu.TASKS:
        items = [
            {
                "video": f"{stem}_a.mp4",
                "duration": 400.5,
                "question": "Q?",
                "candidates": ["x", "y", "z", "w"],
                "answer": "z",
                "question_type": stem.split("_", 1)[1],
            },
            {
                "video": f"{stem}_b.mp4",
                "duration": 120,
                "question": "Q?",
                "candidates": ["x", "y"],
                "answer": "v",
                "question_type": stem.split("_", 1)[1],
            },
        ]
        write_json(src / "json" / f"{stem}.json", items)
        placeholder(src / "video" / stem / f"{stem}_a.mp4")
    report = write_root(tmp_path / "out", mlvu.convert(src))
    assert list(report.questions) == [name for _, name, _ in mlvu.TASKS]
    assert report.skipped == {"answer is not among the candidates": 7}
    questions = load_questions(tmp_path / "out", ["AO"])
    assert (
        questions[0].gold == "C"
        and questions[0].video.resolve() == (src / "video" / "5_order" / "5_order_a.mp4").resolve()
    )


def test_missing_or_ill_formed_release_files_are_one_line_errors(tmp_path, egoschema_src, capsys):
    with pytest.raises(SystemExit, match=r"convert: .*json/1_plotQA.json: MLVU 1_plotQA.json not found"):
        convert_main(["mlvu", str(tmp_path), str(tmp_path / "out")])
    (egoschema_src / "questions.json").write_text('[{"q_uid": "a", "question": "q"}]')
    with pytest.raises(SystemExit, match=r"questions.json: question 0 lacks \['option 0'"):
        convert_main(["egoschema", str(egoschema_src), str(tmp_path / "out")])
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("video,question\n1,q\n")
    write_json(tmp_path / "map_vid_vidorID.json", {})
    with pytest.raises(ValueError, match=r"bad.csv: missing columns \['answer'"):
        nextqa.convert(tmp_path, bad_csv)
    bad_csv.write_text(",".join(NEXTQA_COLUMNS) + "\n" + ",".join(nextqa_row("1", 0, "CW", "0")[:9]) + "\n")
    with pytest.raises(ValueError, match=r"bad.csv line 2: fewer fields than the header"):
        nextqa.convert(tmp_path, bad_csv)
    with pytest.raises(SystemExit):
        convert_main(["nextqa", str(tmp_path), str(tmp_path / "out"), "--full"])
    assert "--full does not apply to nextqa" in capsys.readouterr().err


def test_the_command_reports_what_it_wrote_and_skipped(egoschema_src, tmp_path, capsys):
    convert_main(["egoschema", str(egoschema_src), str(tmp_path / "out"), "--full"])
    out = capsys.readouterr().out
    assert "4 questions in 2 tasks" in out and "skipped 2 records:" in out and "answer without a question: 1" in out
    spec = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert spec["EgoSchema hidden"]["labelled"] is False and "labelled" not in spec["EgoSchema subset"]


def test_a_tiny_model_answers_a_converted_full_egoschema_root_and_its_answers_make_a_submission(
    egoschema_src, tmp_path
):
    """Through the model: the subset is scored, the withheld questions are answered but not scored."""
    rng = np.random.default_rng(1)
    for i in range(4):
        write_video(egoschema_src / "videos" / f"uid-{i}.mp4", rng.integers(0, 255, (8, 48, 64, 3), dtype=np.uint8))
    root = tmp_path / "EgoSchema"
    convert_main(["egoschema", str(egoschema_src), str(root), "--full"])
    tokenizer = char_tokenizer()
    predictions = tmp_path / "predictions.jsonl"
    records = run(tiny_model(tokenizer), tokenizer, load_questions(root), predictions, batch_size=3)
    assert all(r["letter"] in "ABCDE" and not r["missing_media"] for r in records)
    results = aggregate(records)
    assert results["n"] == 2 and list(results["tasks"]) == ["EgoSchema subset"]
    assert results["unlabelled"] == {"EgoSchema hidden": 2}
    submission_main([str(root), str(predictions), str(tmp_path / "sub.csv")])
    lines = (tmp_path / "sub.csv").read_text().splitlines()
    assert lines[1:] == [f"{r['video'].split('/')[-1][:-4]},{ord(r['letter']) - 65}" for r in records]


@pytest.mark.parametrize("name", ["videomme", "videomme_subtitles", "egoschema", "nextqa", "perception_test", "mlvu"])
def test_each_preset_evaluates_its_converted_root_and_takes_more_frames_on_request(name):
    from recipes.evaluate import frame_spec
    from tests.unit.test_configs import compose_train

    cfg = compose_train([f"benchmark={name}", "data.num_frames=32"], config_name="eval")
    assert cfg.benchmark.kind == "mvbench" and cfg.benchmark.name == name
    assert cfg.benchmark.root.startswith(cfg.paths.data_dir + "/")
    assert frame_spec(cfg, None).num_frames == 32
