"""The synthetic temporal world: real decodable media, valid annotations, balance, temporality,
reproducibility, caching, and tokenizers that later stages can rely on."""

import json
import random
import re
import string
import time
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from videochat2.data import qa_generation as qa
from videochat2.embedded import build as building
from videochat2.embedded.build import build, main
from videochat2.embedded.jobs import _seed
from videochat2.embedded.render import render
from videochat2.embedded.tasks import TASKS, sample_clip
from videochat2.embedded.world import FLASH_COLOUR, GENERATOR_VERSION

SMALL = dict(seed=3, train_videos=40, images=10, test_per_task=30, retrieval_videos=10, size=64)
TINY = dict(seed=5, train_videos=9, images=2, test_per_task=2, retrieval_videos=2, size=64)
# Enough clips (about 160) that a one-in-a-few-hundred encoder difference shows up between two builds.
REPRODUCED = dict(seed=0, train_videos=120, images=5, test_per_task=4, retrieval_videos=10, size=64)
MOTION_TASKS = ("moving_direction", "moving_attribute", "action_sequence", "action_localization")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build(tmp_path_factory.mktemp("synthetic") / "set", **SMALL)


@pytest.fixture(scope="module")
def events(root):
    return {e["path"]: e for e in json.loads((root / "annotations" / "events.json").read_text())}


def load(root, name):
    return json.loads((root / "annotations" / f"{name}.json").read_text())


def test_layout_and_manifest(root):
    for name in (
        "pretrain_video",
        "pretrain_image",
        "instruction_video",
        "instruction_video_mc",
        "instruction_image",
        "instruction_image_mc",
        "retrieval_test",
    ):
        assert load(root, name), name
    manifest = json.loads((root / "MANIFEST.json").read_text())
    assert manifest["seed"] == SMALL["seed"] and manifest["generator_version"] == GENERATOR_VERSION
    assert manifest["counts"]["pretrain_video"] == 40 and manifest["counts"]["retrieval_test"] == 10
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"MANIFEST.json"}
    assert set(manifest["checksums"]) == on_disk


def test_every_video_decodes_to_its_recorded_frames(root, events):
    decord = pytest.importorskip("decord", reason="decord has no wheels for this platform")
    videos = [e for e in events.values() if e["path"].endswith(".mp4")]
    assert len(videos) == 40 + 10 + 30 * (len(TASKS) - 1)
    for ann in videos:
        reader = decord.VideoReader(str(root / ann["path"]), num_threads=1)
        assert len(reader) == ann["num_frames"], ann["path"]
        assert reader[0].shape == (64, 64, 3)
        assert round(reader.get_avg_fps()) == ann["fps"]
    for ann in videos[::10]:
        with av.open(str(root / ann["path"])) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == ann["num_frames"] and frames[0].shape == (64, 64, 3)


def test_decoded_pixels_match_the_ground_truth(root, events):
    """The encoding keeps what the questions are about: colours and positions survive H.264."""
    for task, spec in TASKS.items():
        path = f"mvbench/video/{spec.prefix}{task}_0000" + ("" if spec.media_type == "frame" else ".mp4")
        ann = events[path]
        clip = sample_clip(task, _seed(SMALL["seed"], "bench", task, 0), 0, 64)
        assert clip.label == ann["label"]
        expected = render(clip, 64).astype(int)
        if spec.media_type == "frame":
            decoded = np.stack([np.asarray(Image.open(p)) for p in sorted((root / path).iterdir())]).astype(int)
        else:
            with av.open(str(root / path)) as container:
                decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int)
        assert np.abs(decoded - expected).mean() < 6, task


def test_mvbench_items_are_valid(root, events):
    tasks = json.loads((root / "mvbench" / "tasks.json").read_text())
    assert list(tasks) == list(TASKS) and len(tasks) >= 8
    assert any(t["bound"] for t in tasks.values()) and any(t["media_type"] == "frame" for t in tasks.values())
    for entry in tasks.values():
        assert set(entry) == {"json", "prefix", "media_type", "bound", "abbr"}
        items = json.loads((root / "mvbench" / "json" / entry["json"]).read_text())
        assert len(items) == SMALL["test_per_task"]
        for item in items:
            assert item["answer"] in item["candidates"] and 3 <= len(item["candidates"]) <= 5
            assert len(set(item["candidates"])) == len(item["candidates"])
            media = root / "mvbench" / "video" / (entry["prefix"] + item["video"])
            ann = events[media.relative_to(root).as_posix()]
            assert ("start" in item) == entry["bound"]
            if entry["bound"]:
                assert 0 <= item["start"] < item["end"] <= (ann["num_frames"] - 1) / ann["fps"]
                assert item["end"] - item["start"] < 0.85 * ann["num_frames"] / ann["fps"]
            if entry["media_type"] == "frame":
                names = sorted(p.name for p in media.iterdir())
                assert names == [f"{i:05d}.jpg" for i in range(1, ann["num_frames"] + 1)]
            else:
                assert media.is_file()


def test_gold_positions_and_answer_texts_are_balanced(root):
    for task, spec in TASKS.items():
        items = json.loads((root / "mvbench" / "json" / f"{task}.json").read_text())
        letters = Counter(i["candidates"].index(i["answer"]) for i in items)
        assert max(letters.values()) <= 0.4 * len(items), (task, letters)
        if spec.vocabulary:
            texts = Counter(i["answer"] for i in items)
            assert max(texts.values()) <= len(items) / len(spec.vocabulary) + 2, (task, texts)


def test_bound_excludes_a_decoy_event(events):
    """Only the bounded segment answers bound tasks: each clip also has a decoy event outside it."""
    for ann in events.values():
        if ann["task"] in ("action_localization", "action_sequence"):
            start, end = (round(b * ann["fps"]) for b in ann["bound"])
            flagged = [e for e in ann["events"] if "in_bound" in e]
            outside = [e for e in flagged if not e["in_bound"]]
            assert len(outside) == 1 and (outside[0]["end"] < start or outside[0]["start"] > end)
            assert all(start <= e["start"] and e["end"] <= end for e in flagged if e["in_bound"])


def test_training_annotations_are_valid_and_disjoint_from_benchmark(root, events):
    videos, images = root / "videos", root / "images"
    for name, base in (("pretrain_video", videos), ("retrieval_test", videos), ("pretrain_image", images)):
        for record in load(root, name):
            key = "image" if name == "pretrain_image" else "video"
            assert (base / record[key]).is_file() and record["caption"].endswith(".")
    instructions = load(root, "instruction_video") + load(root, "instruction_image")
    for record in instructions:
        base, key = (videos, "video") if "video" in record else (images, "image")
        assert (base / record[key]).is_file()
        assert [set(turn) for turn in record["QA"]] == [{"i", "q", "a"}] * 2 and all(t["a"] for t in record["QA"])
    choices = load(root, "instruction_video_mc") + load(root, "instruction_image_mc")
    assert len(choices) == len(instructions)
    for item in choices:
        base, key = (videos, "video") if "video" in item else (images, "image")
        assert (base / item[key]).is_file() and item["answer"] in item["candidates"]
        assert len(set(item["candidates"])) == len(item["candidates"]) >= 3
    covered = {Path(r["video"]).name.rsplit("_", 1)[0] for r in load(root, "instruction_video_mc")}
    assert covered == set(TASKS)
    manifest = json.loads((root / "MANIFEST.json").read_text())["checksums"]
    train = {h for p, h in manifest.items() if p.startswith("videos/")}
    bench = {h for p, h in manifest.items() if p.startswith("mvbench/video/")}
    assert not train & bench
    train_words = {r["video"] for r in load(root, "pretrain_video")}
    assert not train_words & {r["video"] for r in load(root, "retrieval_test")}


def _template_pattern(templates):
    return re.compile("|".join(re.sub(r"\\\{\w+\\\}", ".+", re.escape(t)) for t in templates))


def test_training_and_benchmark_ask_with_the_same_templates(root):
    """Stage 3 sees every benchmark question type, on other clips."""
    for task, spec in TASKS.items():
        pattern = _template_pattern(spec.templates)
        bench = json.loads((root / "mvbench" / "json" / f"{task}.json").read_text())
        trained = [r["question"] for r in load(root, "instruction_video_mc") if Path(r["video"]).name.startswith(task)]
        assert trained and all(pattern.fullmatch(q) for q in trained), task
        assert all(pattern.fullmatch(i["question"]) for i in bench), task
        assert not pattern.fullmatch("What colour is the moving object at the end?") or task == "moving_attribute"


# ---------------------------------------------------------------- temporality


def _frame_index(clip, where):
    lo, hi = 0, clip.num_frames - 1
    if clip.bound:
        lo, hi = round(clip.bound[0] * clip.fps), min(round(clip.bound[1] * clip.fps), hi)
    return int(lo + (hi - lo) * where)


def _object_view(clip, name, t):
    for track in clip.tracks:
        if name in (track.name, track.shape):
            if not track.visible[t]:
                return ("hidden",)
            return (track.colour[t] == FLASH_COLOUR, int(track.x[t] * 3 // 64), int(track.y[t] * 3 // 64))
    return ("hidden",)


def _candidate_view(clip, candidate, t):
    """What one frame shows that bears on one option (from the ground truth, not the pixels)."""
    if clip.task in ("object_existence", "action_sequence"):
        return _object_view(clip, candidate, t)
    if clip.task == "moving_attribute":
        return sum(bool(tr.visible[t]) and candidate in (tr.colour[t], tr.shape) for tr in clip.tracks)
    if clip.task == "character_order":
        return None if clip.chars[t] is None else candidate.split(", ").index(clip.chars[t])
    if clip.task == "scene_transition":
        first, second = candidate[len("from ") :].split(" to ")
        return clip.background[t] == first, clip.background[t] == second
    subject = clip.fields.get("object") or clip.fields.get("shape")
    return candidate, _object_view(clip, subject, t)


def oracle_accuracy(task, view, n=1200):
    """Accuracy of the best guess from ``view(clip, item, option)`` for each option, fitted on 2/3 of n clips."""
    clips = [sample_clip(task, (11, 99, i), i) for i in range(n)]
    records = [
        {"video": str(i), "label": c.label, **c.fields, **({"distractors": c.distractors} if c.distractors else {})}
        for i, c in enumerate(clips)
    ]
    items, _ = qa.build_items(records, TASKS[task].qa_task(task), seed=1)
    views = [[(view(c, i, o), o == i["answer"]) for o in i["candidates"]] for c, i in zip(clips, items)]
    split, table = 2 * n // 3, {}
    for options in views[:split]:
        for key, gold in options:
            hits, total = table.get(key, (0, 0))
            table[key] = (hits + gold, total + 1)
    rng, correct, chance = random.Random(0), 0, 0
    for options in views[split:]:
        scored = [((table.get(k, (0, 0))[0] + 1) / (table.get(k, (0, 0))[1] + 2), rng.random(), g) for k, g in options]
        correct += max(scored)[2]
        chance += 1 / len(options)
    return correct / (n - split), chance / (n - split)


def single_frame_oracle(task, where, n=1200):
    return oracle_accuracy(task, lambda clip, item, option: _candidate_view(clip, option, _frame_index(clip, where)), n)


def _text_view(clip, item, option):
    lengths = sorted(len(o) for o in item["candidates"])
    return option, lengths.index(len(option)), item["question"].split()[0]


@pytest.mark.parametrize("task", list(TASKS))
def test_text_alone_is_at_chance(task):
    """A blind model that knows each option's text, its length rank and the question cannot beat chance."""
    accuracy, chance = oracle_accuracy(task, _text_view)
    assert accuracy <= chance + 0.07, (task, accuracy, chance)


@pytest.mark.parametrize("task", list(TASKS))
def test_the_middle_frame_alone_is_at_chance(task):
    accuracy, chance = single_frame_oracle(task, 0.5)
    assert accuracy <= chance + 0.07, (task, accuracy, chance)


@pytest.mark.parametrize("task", MOTION_TASKS)
def test_motion_tasks_are_at_chance_from_any_single_frame(task):
    for where in (0.0, 0.3, 1.0):
        accuracy, chance = single_frame_oracle(task, where, n=600)
        assert accuracy <= chance + 0.08, (task, where, accuracy, chance)


def test_oracle_detects_a_leaky_task():
    """The oracle is not blind: reading the last frame of a state change reveals 'disappears'."""
    accuracy, chance = single_frame_oracle("state_change", 1.0)
    assert accuracy > chance + 0.15


def test_events_span_several_of_eight_sampled_frames():
    for task in ("moving_direction", "object_existence", "character_order", "state_change"):
        for i in range(30):
            clip = sample_clip(task, (7, 7, i), i)
            picks = [int((k + 0.5) * clip.num_frames / 8) for k in range(8)]
            for event in clip.events:
                if event["type"] in ("transient", "char", "disappear", "colour_change"):
                    last = clip.num_frames - 1 if event["type"] in ("disappear", "colour_change") else event["end"]
                    assert sum(event["start"] <= p <= last for p in picks) >= 2, (task, event)


# ---------------------------------------------------------------- reproducibility and caching


@pytest.mark.slow  # builds the world twice more
def test_same_seed_same_bytes_and_cache_is_reused(root, tmp_path):
    """Finding 7: about one clip in a few hundred used to encode differently from one build to the next."""
    a = build(tmp_path / "a", **REPRODUCED)
    b = build(tmp_path / "b", **REPRODUCED)
    checksums = [json.loads((r / "MANIFEST.json").read_text())["checksums"] for r in (a, b)]
    assert sum(name.endswith(".mp4") for name in checksums[0]) >= 150
    assert [name for name in checksums[0] if checksums[0][name] != checksums[1].get(name)] == []
    assert checksums[0] == checksums[1]
    stamp = (root / "MANIFEST.json").stat().st_mtime_ns
    start = time.perf_counter()
    assert build(root, **SMALL) == root
    assert time.perf_counter() - start < 1.0 and (root / "MANIFEST.json").stat().st_mtime_ns == stamp


def test_new_settings_refuse_to_replace_a_built_set(tmp_path):
    """Finding 6: other settings silently rebuilt the root under existing runs (and deleted its LLM)."""
    target = tmp_path / "set"
    build(target, **TINY)
    (target / "llm").mkdir()  # what stage 2 pretrains under the root
    with pytest.raises(FileExistsError, match=r"seed=5 \(now 6\).*data.root=.*--replace") as refused:
        build(target, **{**TINY, "seed": 6})
    assert "\n" not in str(refused.value)
    assert (target / "llm").is_dir() and json.loads((target / "MANIFEST.json").read_text())["seed"] == 5


def test_module_import_does_not_need_pyav():
    """Reading a built set (annotations, tokenizers) must not need the encoder library."""
    import subprocess
    import sys

    code = "import sys; sys.modules['av'] = None; import videochat2.embedded.build"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_new_settings_replace_the_set_whole_when_asked(tmp_path):
    target = tmp_path / "set"
    build(target, **TINY)
    build(target, **{**TINY, "seed": 6, "retrieval_videos": 1}, replace=True)
    manifest = json.loads((target / "MANIFEST.json").read_text())
    assert manifest["seed"] == 6
    on_disk = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()} - {"MANIFEST.json"}
    assert on_disk == set(manifest["checksums"])
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_interrupted_build_is_not_taken_as_complete(tmp_path, monkeypatch):
    target = tmp_path / "set"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(building, "train_tokenizers", crash)
    with pytest.raises(KeyboardInterrupt):
        build(target, **TINY, workers=1)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    target.mkdir()
    (target / "videos").mkdir()
    with pytest.raises(FileExistsError, match="no synthetic MANIFEST.json"):
        build(target, **TINY)


def test_cli_builds_and_rejects_bad_settings(tmp_path, capsys):
    assert (
        main(
            [
                "--out",
                str(tmp_path / "cli"),
                "--seed",
                "5",
                "--train-videos",
                "9",
                "--images",
                "2",
                "--test-per-task",
                "2",
                "--retrieval-videos",
                "2",
            ]
        )
        == 0
    )
    assert (tmp_path / "cli" / "MANIFEST.json").is_file()
    assert main(["--out", str(tmp_path / "x"), "--size", "31"]) == 2
    assert "size must be" in capsys.readouterr().err


# ---------------------------------------------------------------- tokenizers


@pytest.fixture(scope="module")
def tokenizers(root):
    from transformers import AutoTokenizer

    return (
        AutoTokenizer.from_pretrained(str(root / "tokenizers" / "qformer")),
        AutoTokenizer.from_pretrained(str(root / "tokenizers" / "llm")),
    )


def test_qformer_tokenizer_is_bert_style(tokenizers):
    qformer, _ = tokenizers
    assert qformer.is_fast and qformer.bos_token == "[DEC]"
    for token in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", "[DEC]"):
        assert qformer.convert_tokens_to_ids(token) != qformer.unk_token_id or token == "[UNK]"
    encoded = qformer("The Red circle moves up.", return_offsets_mapping=True)
    tokens = qformer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "red" in tokens
    assert encoded["offset_mapping"][2] == (4, 7)
    assert qformer.convert_ids_to_tokens(qformer("zebra€")["input_ids"])[1:-1]


def test_llm_tokenizer_round_trips_and_isolates_punctuation(tokenizers):
    _, llm = tokenizers
    assert llm.is_fast and (llm.bos_token, llm.eos_token) == ("<s>", "</s>")
    assert llm.pad_token is not None and llm.unk_token == "<unk>" and llm.pad_token_id != llm.eos_token_id
    texts = [
        "###Human: <Video></Video>\n###Human: Question: Which way?\nOptions:\n(A) red\n(B) left\n"
        "Only give the best option.\n###Assistant: Best option:(A) red",
        "[INST] <Video></Video> [/INST] [INST] x [/INST]  two  spaces\n\n\ttab",
        "Grüße, 漢字 and émoji 🙂 — unseen characters!",
    ]
    for text in texts:
        ids = llm(text)["input_ids"]
        assert ids[0] == llm.bos_token_id
        assert llm.decode(ids, skip_special_tokens=True) == text
        assert llm.decode(llm(text, add_special_tokens=False)["input_ids"]) == text
    for letter in "ABCDE":
        assert len(llm(letter, add_special_tokens=False)["input_ids"]) == 1
    assert llm.tokenize("(A) red")[:3] == ["(", "A", ")"]
    assert llm.tokenize("Best option:(")[-1] == "("
    punctuation = set(string.punctuation)
    for token_id in range(len(llm)):
        piece = llm.decode([token_id])
        if token_id not in llm.all_special_ids and punctuation & set(piece):
            assert len(piece.strip()) == 1 and len(piece) == 1, repr(piece)
    assert 300 < len(llm) <= 2000
