"""Annotation formats: each one parsed into the same records, and each malformed record named by file and index."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from datamodules.common import build_corpus
from videochat2.data.formats import AnnotationError, MultipleChoice, load_records, read_annotations


def write(path: Path, records: list, jsonl: bool = False) -> Path:
    text = "\n".join(json.dumps(r) for r in records) if jsonl else json.dumps(records)
    path.write_text(text)
    return path


LLAVA = {
    "id": "v1",
    "video": "clips/a.mp4",
    "conversations": [
        {"from": "human", "value": "<video>\nWhat happens first?"},
        {"from": "gpt", "value": "A red square appears."},
        {"from": "human", "value": "And then?"},
        {"from": "gpt", "value": "It moves left."},
    ],
}


@pytest.mark.parametrize("jsonl", [False, True])
def test_llava_conversations_become_qa_turns(tmp_path, jsonl):
    path = write(tmp_path / ("llava.jsonl" if jsonl else "llava.json"), [LLAVA, LLAVA], jsonl)
    records = load_records(path, tmp_path / "media", "video", "llava", reader="pyav", corpus="mine")
    assert len(records) == 2
    record = records[0]
    assert record.path == str(tmp_path / "media" / "clips" / "a.mp4")
    assert record.qa == (
        {"i": "", "q": "What happens first?", "a": "A red square appears."},
        {"i": "", "q": "And then?", "a": "It moves left."},
    )
    assert (record.reader, record.corpus, record.caption) == ("av", "mine", None)


def test_llava_system_turn_and_inline_placeholder(tmp_path):
    item = {
        "image": "x.jpg",
        "conversations": [
            {"from": "system", "value": "Be brief. "},
            {"from": "human", "value": "Look at <image> and name the shape."},
            {"from": "gpt", "value": "A circle."},
        ],
    }
    (record,) = load_records(write(tmp_path / "a.json", [item]), tmp_path, "image", "llava")
    assert record.qa == ({"i": "Be brief.", "q": "Look at and name the shape.", "a": "A circle."},)


@pytest.mark.parametrize(
    ("conversations", "message"),
    [
        (None, r"record 1 has no non-empty 'conversations'"),
        ([{"from": "human", "value": "<video>\nq"}], r"record 1: conversations must alternate .*\(1 turns\)"),
        ([{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}], r"record 1: .*turn 0 is from 'gpt'"),
        ([{"from": "human", "value": "q"}, {"from": "gpt"}], r"record 1, conversation turn 1 has no string 'value'"),
    ],
)
def test_llava_errors_name_file_and_record(tmp_path, conversations, message):
    bad = {"video": "b.mp4"} if conversations is None else {"video": "b.mp4", "conversations": conversations}
    path = write(tmp_path / "odd.json", [LLAVA, bad])
    with pytest.raises(AnnotationError, match=r"odd.json: " + message):
        load_records(path, tmp_path, "video", "llava")


def test_jsonl_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(LLAVA) + "\n{not json\n")
    with pytest.raises(AnnotationError, match=r"broken.jsonl: line 2 is not valid JSON"):
        load_records(path, tmp_path, "video", "llava")


MVBENCH = {
    "video": "v.mp4",
    "question": "Which way did it move?",
    "candidates": ["left", "up", "right"],
    "answer": "up",
    "start": 1.0,
    "end": 3.5,
}


def test_mvbench_items_stay_structured_multiple_choice(tmp_path):
    (record,) = load_records(write(tmp_path / "mc.json", [MVBENCH]), tmp_path, "video", "mvbench")
    assert record.choice == MultipleChoice("Which way did it move?", ("left", "up", "right"), "up")
    assert record.qa == () and record.caption is None
    assert (record.start, record.end) == (1.0, 3.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"answer": "down"}, r"record 0: 'answer' 'down' is not one of the candidates"),
        ({"candidates": ["only"], "answer": "only"}, r"record 0: 'candidates' must be a list of 2-5 strings"),
        ({"question": 3}, r"record 0 has no string 'question'"),
        ({"start": 4.0}, r"record 0 has invalid clip bounds"),
        ({"video": None}, r"record 0 has no 'video' path"),
    ],
)
def test_mvbench_errors(tmp_path, change, message):
    path = write(tmp_path / "mc.json", [{**MVBENCH, **change}])
    with pytest.raises(AnnotationError, match=r"mc.json: " + message):
        load_records(path, tmp_path, "video", "mvbench")


def test_instruction_records_keep_bounds_and_name_bad_turns(tmp_path):
    good = {"video": "a.mp4", "QA": [{"i": "watch", "q": "what?", "a": "this"}], "start": 0, "end": 2}
    (record,) = load_records(write(tmp_path / "it.json", [good]), tmp_path, "video", "videochat2_instruction")
    assert record.qa == ({"i": "watch", "q": "what?", "a": "this"},) and (record.start, record.end) == (0.0, 2.0)
    bad = {"video": "a.mp4", "QA": [{"q": "what?"}]}
    with pytest.raises(AnnotationError, match=r"it.json: record 1, QA turn 0 has no string 'a'"):
        load_records(write(tmp_path / "it.json", [good, bad]), tmp_path, "video", "videochat2_instruction")


def test_unknown_format_reader_or_media_type(tmp_path):
    path = write(tmp_path / "a.json", [])
    with pytest.raises(AnnotationError, match="format must be one of"):
        load_records(path, tmp_path, "video", "webvid")
    with pytest.raises(AnnotationError, match="reader must be one of"):
        load_records(path, tmp_path, "video", "llava", reader="opencv")
    with pytest.raises(AnnotationError, match="media_type must be one of"):
        load_records(path, tmp_path, "audio", "llava")


def corpus_entries(tmp_path: Path, weights: tuple) -> list:
    captions = write(tmp_path / "cap.json", [{"video": f"{i}.mp4", "caption": "c"} for i in range(6)])
    llava = write(tmp_path / "conv.jsonl", [{**LLAVA, "image": "i.jpg"}] * 2, jsonl=True)
    entries = [
        {"name": "captions", "annotation": str(captions), "media_root": str(tmp_path), "media_type": "video"},
        {
            "name": "chats",
            "annotation": str(llava),
            "media_root": str(tmp_path),
            "media_type": "image",
            "format": "llava",
        },
    ]
    for entry, weight in zip(entries, weights):
        if weight is not None:
            entry["weight"] = weight
    return OmegaConf.create(entries)


def test_corpus_registry_formats_weights_and_start_up_log(tmp_path, caplog):
    caplog.set_level("INFO")
    mix = build_corpus(corpus_entries(tmp_path, (None, None)), "caption")
    assert [r.corpus for r in mix.records] == ["captions"] * 6 + ["chats"] * 2
    assert mix.records[0].caption == "c" and mix.records[6].qa[0]["q"] == "What happens first?"
    assert mix.corpus_ids == [0] * 6 + [1] * 2 and mix.weights is None
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("corpus")]
    assert len(lines) == 2 and "6 records" in lines[0] and "75.0% of the mix" in lines[0]
    assert "image" in lines[1] and "25.0%" in lines[1]
    caplog.clear()
    mix = build_corpus(corpus_entries(tmp_path, (1, 3)), "caption")
    assert mix.weights == [1.0, 3.0]
    assert "weight 3" in caplog.records[-1].getMessage() and "75.0% of the mix" in caplog.records[-1].getMessage()
    with pytest.raises(ValueError, match="give every corpus a weight, or none"):
        build_corpus(corpus_entries(tmp_path, (1, None)), "caption")


OPENAI = {
    "messages": [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "<video>What happens?"},
        {"role": "assistant", "content": "A square moves left."},
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": "It stops."},
    ],
    "videos": ["clips/a.mp4"],
}
SHAREGPT = {
    "conversations": [{"from": "human", "value": "Name the shape in <image>."}, {"from": "gpt", "value": "A circle."}],
    "images": ["x.jpg"],
    "system": "Be brief.",
}


def test_openai_messages_become_multi_turn_qa_with_the_system_prompt(tmp_path):
    path = write(tmp_path / "chat.jsonl", [OPENAI], jsonl=True)
    (record,) = load_records(path, tmp_path / "media", "video", "openai", corpus="mine")
    assert record.path == str(tmp_path / "media" / "clips" / "a.mp4") and record.media_type == "video"
    assert record.qa == (
        {"i": "Answer in one sentence.", "q": "What happens?", "a": "A square moves left."},
        {"i": "", "q": "And then?", "a": "It stops."},
    )


def test_sharegpt_images_and_top_level_system(tmp_path):
    (record,) = load_records(write(tmp_path / "s.json", [SHAREGPT]), tmp_path, "image", "sharegpt")
    assert record.path == str(tmp_path / "x.jpg")
    assert record.qa == ({"i": "Be brief.", "q": "Name the shape in .", "a": "A circle."},)
    as_user = {
        **SHAREGPT,
        "conversations": [{"from": "user", "value": "<image>Shape?"}, {"from": "assistant", "value": "A"}],
    }
    (record,) = load_records(write(tmp_path / "u.json", [as_user]), tmp_path, "image", "sharegpt")
    assert record.qa[0]["q"] == "Shape?"


def test_unusable_records_are_skipped_counted_and_logged_by_reason(tmp_path, caplog):
    def user(text: str) -> dict:
        return {**OPENAI, "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "a"}]}

    records = [
        OPENAI,
        {**OPENAI, "videos": ["a.mp4", "b.mp4"]},
        user("<video> and <video>: differ?"),
        user("no placeholder"),
        {**OPENAI, "videos": []},
        {**OPENAI, "images": ["i.jpg"]},
        {**OPENAI, "messages": [*OPENAI["messages"], {"role": "tool", "content": "{}"}]},
        {**OPENAI, "videos": ["c.mp4", "d.mp4"]},
        user("<image> shown"),
    ]
    loaded = read_annotations(write(tmp_path / "mix.json", records), tmp_path, "video", "openai")
    assert [r.path for r in loaded.records] == [str(tmp_path / "clips" / "a.mp4")]
    assert loaded.skipped == {
        "records with more than one video": [1, 7],
        "records whose <video> placeholder count differs from its one video": [2, 3, 8],
        "records with no video": [4],
        "records with images in a video corpus": [5],
        "records with tool turns (role 'tool')": [6],
    }
    caplog.set_level("WARNING")
    assert len(load_records(tmp_path / "mix.json", tmp_path, "video", "openai", corpus="mixed")) == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert (
        line.startswith("corpus mixed: ")
        and "skipped 8 records: 2 records with more than one video (first: record 1)" in line
    )


def test_a_file_with_every_record_skipped_is_an_error(tmp_path):
    path = write(tmp_path / "two.json", [{**OPENAI, "videos": ["a.mp4", "b.mp4"]}])
    with pytest.raises(AnnotationError, match=r"every record was skipped: .*two.json: skipped 1 records"):
        load_records(path, tmp_path, "video", "openai")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"messages": None}, r"record 0 has no non-empty 'messages' list"),
        ({"messages": [{"role": "user", "content": ["parts"]}]}, r"record 0, message 0 has no string 'content'"),
        (
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "<video>q"}]},
            r"record 0: messages must alternate user/assistant turns.*turn 0 is from 'assistant'",
        ),
        ({"videos": "a.mp4"}, r"record 0: 'videos' must be a list of paths"),
    ],
)
def test_openai_malformed_records_are_errors(tmp_path, change, message):
    path = write(tmp_path / "bad.json", [{**OPENAI, **change}])
    with pytest.raises(AnnotationError, match=r"bad.json: " + message):
        load_records(path, tmp_path, "video", "openai")


def write_parquet(path: Path, records: list) -> Path:
    pa = pytest.importorskip("pyarrow", reason="writing a Parquet fixture needs pyarrow (the [datasets] extra)")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def test_parquet_file_and_folder_of_shards_read_with_datasets(tmp_path):
    pytest.importorskip("datasets", reason="Parquet annotations need the optional [datasets] extra")
    clip = {"video": "a.mp4", "QA": [{"i": "watch", "q": "what?", "a": "this"}], "start": 0.0, "end": 2.0}
    no_bounds = {"video": "b.mp4", "QA": [{"i": "", "q": "and?", "a": "that"}], "start": None, "end": None}
    single = write_parquet(tmp_path / "it.parquet", [clip, no_bounds])
    records = load_records(single, tmp_path, "video", "videochat2_instruction")
    assert [(r.path, r.qa, r.start) for r in records] == [
        (str(tmp_path / "a.mp4"), ({"i": "watch", "q": "what?", "a": "this"},), 0.0),
        (str(tmp_path / "b.mp4"), ({"i": "", "q": "and?", "a": "that"},), None),
    ]
    shards = tmp_path / "shards" / "data"
    shards.mkdir(parents=True)
    write_parquet(shards / "train-00000-of-00002.parquet", [OPENAI])
    write_parquet(shards / "train-00001-of-00002.parquet", [{**OPENAI, "videos": ["clips/b.mp4", "c.mp4"]}, OPENAI])
    loaded = read_annotations(tmp_path / "shards", tmp_path, "video", "openai")
    assert len(loaded.records) == 2 and loaded.records[0].qa[0]["i"] == "Answer in one sentence."
    assert loaded.skipped == {"records with more than one video": [1]}
    (shards / "train-00001-of-00002.parquet").write_text("not parquet")
    with pytest.raises(AnnotationError, match=r"shards: not readable as Parquet \(ArrowInvalid"):
        load_records(tmp_path / "shards", tmp_path, "video", "openai")


def test_parquet_without_datasets_hub_ids_and_empty_folders_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    (tmp_path / "a.parquet").write_bytes(b"")
    with pytest.raises(AnnotationError, match=r"a.parquet: Parquet annotations .* pip install -e '.\[datasets\]'"):
        load_records(tmp_path / "a.parquet", tmp_path, "video")
    with pytest.raises(AnnotationError, match=r"^lmms-lab/VideoChat2-IT: not a local file; .* download it first"):
        load_records("lmms-lab/VideoChat2-IT", tmp_path, "video")
    with pytest.raises(AnnotationError, match=r"missing.json: annotation file not found"):
        load_records(tmp_path / "missing.json", tmp_path, "video")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotationError, match=r"empty: annotation folder holds no .parquet shards"):
        load_records(tmp_path / "empty", tmp_path, "video")
