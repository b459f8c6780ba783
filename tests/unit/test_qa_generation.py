"""MVBench-style multiple-choice generation: item shape, balance, and one-line errors on bad input."""

import json
import random
from collections import Counter

import pytest

from videochat2.data import qa_generation as qa

LABELS = ["opening a door", "closing a door", "pouring water", "cutting bread", "folding a towel"]


@pytest.fixture
def annotation_file(tmp_path):
    records = [{"video": f"clip_{i:03d}.mp4", "label": LABELS[i % len(LABELS)]} for i in range(40)]
    records[3].update(start=1.5, end=4.0)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(records))
    return path


def run_cli(*args):
    return qa.main([str(a) for a in args])


def test_cli_writes_valid_balanced_items(annotation_file, tmp_path, capsys):
    out = tmp_path / "out" / "my_task.json"
    assert run_cli("--input", annotation_file, "--output", out, "--options", "4", "--template", "What happens?") == 0
    assert "wrote 40 items" in capsys.readouterr().out
    items = json.loads(out.read_text())
    assert len(items) == 40
    for item in items:
        assert set(item) >= {"video", "question", "candidates", "answer"}
        assert item["answer"] in item["candidates"]
        assert len(item["candidates"]) == 4 == len(set(item["candidates"]))
        assert set(item["candidates"]) <= set(LABELS)
        assert item["question"] == "What happens?"
    assert items[3]["start"] == 1.5 and items[3]["end"] == 4.0
    assert "start" not in items[0]
    letters = Counter(item["candidates"].index(item["answer"]) for item in items)
    assert max(letters.values()) <= 0.4 * len(items)


def test_same_seed_same_items_other_seed_differs(annotation_file, tmp_path):
    outs = [tmp_path / f"{i}.json" for i in range(3)]
    for out, seed in zip(outs, (1, 1, 2)):
        run_cli("--input", annotation_file, "--output", out, "--seed", seed)
    assert outs[0].read_text() == outs[1].read_text() != outs[2].read_text()


def test_fixed_vocabulary_duplicates_removed_and_templates_vary():
    task = qa.Task(
        "dir",
        ("Where does the {thing} go?", "Which way is the {thing} moving?"),
        qa.fixed_vocabulary(["left", "right", "left", "up", "down"]),
        4,
    )
    labels = ["left", "right", "up", "down"]
    records = [{"video": f"{i}.mp4", "label": labels[i % 4], "thing": "ball"} for i in range(60)]
    items, counts = qa.build_items(records, task, seed=0)
    assert counts == {4: 60}
    assert {i["question"] for i in items} == {"Where does the ball go?", "Which way is the ball moving?"}
    assert all(sorted(i["candidates"]) == ["down", "left", "right", "up"] for i in items)
    assert max(Counter(i["candidates"].index(i["answer"]) for i in items).values()) <= 0.3 * 60


def test_distractors_prefer_similar_length():
    pool = ["a", "bb", "xyzxyzxyzxyzxyzxyzxyzxyzxyz", "long label 1", "long label 2", "long label 3", "long label 4"]
    picks = qa.pick_distractors("long label 0", pool, 2, random.Random(0))
    assert all(p.startswith("long label") for p in picks)


def test_answer_is_not_the_median_length_option():
    """A text-only model picking the middle-length option must stay at chance."""
    pool = ["x" * n for n in range(1, 40)]
    rng, median_hits, trials = random.Random(0), 0, 900
    for _ in range(trials):
        answer = pool[rng.randrange(10, 30)]
        options = [answer] + qa.pick_distractors(answer, pool, 2, rng)
        median_hits += sorted(options, key=len)[1] == answer
    assert median_hits / trials < 0.40


def test_per_record_distractors_and_formatting():
    task = qa.Task("order", ("Order?",), qa.per_record(), 3)
    records = [{"video": "v.mp4", "label": "A, B", "distractors": ["B, A", "B, A", "A, B", "C, A"]}]
    (item,), _ = qa.build_items(records, task)
    assert sorted(item["candidates"]) == ["A, B", "B, A", "C, A"]
    block = qa.format_question(item["question"], item["candidates"])
    assert block.splitlines()[0] == "Question: Order?" and block.splitlines()[2].startswith("(A) ")
    answer = qa.format_answer(item["candidates"], item["answer"])
    assert answer == f"({'ABC'[item['candidates'].index('A, B')]}) A, B"


@pytest.mark.parametrize(
    "content, expected",
    [
        ("not json", "cannot read JSON"),
        ('{"video": "a.mp4"}', "expected a JSON list"),
        ('[{"video": "a.mp4", "label": "x"}, 7]', "item 1: expected an object"),
        ('[{"video": "a.mp4", "label": "x"}, {"label": "y"}]', "item 1: missing or empty 'video'"),
        ('[{"video": "a.mp4", "label": "x"}, {"video": "b.mp4"}]', "item 1: missing field 'label'"),
        ('[{"video": "a.mp4", "label": "x", "start": 3, "end": 1}]', "item 0: need 0 <= start < end"),
        ('[{"video": "a.mp4", "label": "x", "start": 1}]', "item 0: 'start' and 'end' must both be numbers"),
    ],
)
def test_malformed_input_names_file_and_item(tmp_path, capsys, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert run_cli("--input", path, "--output", tmp_path / "o.json", "--vocabulary", "x,y,z", "--options", "3") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(path) in err and expected in err
    assert not (tmp_path / "o.json").exists()


def test_too_few_candidates_is_an_error_unless_allowed(tmp_path, capsys):
    path = tmp_path / "two.json"
    path.write_text(json.dumps([{"video": f"{i}.mp4", "label": "ab"[i % 2]} for i in range(6)]))
    out = tmp_path / "o.json"
    assert run_cli("--input", path, "--output", out, "--options", "4") == 2
    assert "item 0: only 2 distinct candidates for 4 options" in capsys.readouterr().err
    assert run_cli("--input", path, "--output", out, "--options", "4", "--allow-fewer") == 0
    assert "6 with 2 options" in capsys.readouterr().out
    assert all(len(i["candidates"]) == 2 for i in json.loads(out.read_text()))


def test_label_outside_vocabulary_and_template_field_errors():
    task = qa.Task("t", ("Where is the {thing}?",), qa.fixed_vocabulary(["left", "right", "up"]), 3)
    with pytest.raises(qa.QAGenerationError, match=r"src.json: item 0: label 'down' is not in the vocabulary"):
        qa.build_items([{"video": "a", "label": "down", "thing": "x"}], task, source="src.json")
    with pytest.raises(qa.QAGenerationError, match=r"item 0: template .* needs the field 'thing'"):
        qa.build_items([{"video": "a", "label": "up"}], task)
    with pytest.raises(qa.QAGenerationError, match="num_options"):
        qa.build_items([], qa.Task("t", ("q",), qa.fixed_vocabulary(["a"]), 6))
