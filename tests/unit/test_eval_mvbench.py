"""MVBench evaluation on tiny fake data with a tiny random model: frames, cache, batching, resume, media."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tests.conftest import ramp_frames, write_video
from videochat2.data.frame_indices import official_mvbench_indices
from videochat2.data.video import MVBENCH_SAMPLE, FrameSampling, MediaReadError, read_media
from videochat2.eval.mvbench import aggregate, load_questions, plot_results, write_results
from videochat2.eval.mvbench.answerers import GenerateAnswerer, LetterLogitsAnswerer, letter_token_ids, model_inputs
from videochat2.eval.mvbench.data import FrameCache, FrameSpec, MVBenchCollator, MVBenchDataset, cache_key
from videochat2.eval.mvbench.evaluate import check_media, start_or_resume
from videochat2.eval.mvbench.results import PredictionLog, load_predictions
from videochat2.eval.mvbench.run import answer_questions, missing_media, pending_questions, question_loader, run_records
from videochat2.models.qformer import QFormerConfig
from videochat2.models.videochat2 import VideoChat2, VideoChat2Config
from videochat2.models.vision import VisionConfig
from videochat2.prompts import SYSTEM_PROMPT, build_prompt

SPEC = FrameSpec(num_frames=4, image_size=32)
OPTIONS = ["red circle", "blue square", "green cross", "cyan star"]


def char_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer without merges: every prompt character is one token, letters included."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([SYSTEM_PROMPT], trainer)
    # Adds BOS itself, as the Llama/Mistral tokenizers do (the prompt then starts with it, as in the original).
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
    )


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return char_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer) -> VideoChat2:
    return tiny_model(tokenizer)


def tiny_model(tokenizer: PreTrainedTokenizerFast, initializer_range: float = 0.02) -> VideoChat2:
    """A random tiny VideoChat2 (seeded); a wider `initializer_range` makes its LLM follow the context more."""
    torch.manual_seed(0)
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=2048,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            initializer_range=initializer_range,
        )
    ).eval()
    vision = VisionConfig.tiny(img_size=32, embed_dim=32, depth=2, num_heads=2)
    qformer = QFormerConfig.tiny(
        vocab_size=40,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        encoder_width=32,
        num_query_tokens=4,
    )
    return VideoChat2(VideoChat2Config(num_query=4, num_base_query=4), vision, qformer, llm).eval()


def noise_video(path: Path, seed: int, frames: int = 24) -> None:
    rng = np.random.default_rng(seed)
    write_video(path, rng.integers(0, 255, (frames, 48, 64, 3), dtype=np.uint8))


def frame_folder(path: Path, count: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(ramp_frames(count), start=1):
        Image.fromarray(frame).save(path / f"{i:05d}.jpg")


def item(video: str, answer: int, n_options: int = 4, bound: tuple[float, float] | None = None) -> dict:
    out = {
        "video": video,
        "question": f"Which one is it in {video}?",
        "candidates": OPTIONS[:n_options],
        "answer": OPTIONS[answer],
    }
    return out | ({"start": bound[0], "end": bound[1]} if bound else {})


@pytest.fixture
def tasks_json_root(tmp_path: Path) -> Path:
    """Two video tasks reusing the name v0.mp4 in different folders, and a bounded frame-folder task."""
    root = tmp_path / "bench"
    tasks = {
        "clips_a": {"json": "a.json", "prefix": "a/", "media_type": "video"},
        "clips_b": {"json": "b.json", "prefix": "b/", "media_type": "video", "abbr": "CB"},
        "frames": {"json": "f.json", "prefix": "tv/", "media_type": "frame", "bound": True},
    }
    (root / "json").mkdir(parents=True)
    (root / "tasks.json").write_text(json.dumps(tasks))
    for i in range(3):
        noise_video(root / "video" / "a" / f"v{i}.mp4", seed=i)
        noise_video(root / "video" / "b" / f"v{i}.mp4", seed=10 + i)
        frame_folder(root / "video" / "tv" / f"clip{i}", 12 + i)
    (root / "json" / "a.json").write_text(json.dumps([item(f"v{i}.mp4", i, 4) for i in range(3)]))
    (root / "json" / "b.json").write_text(json.dumps([item(f"v{i}.mp4", 2 - i, 3) for i in range(3)]))
    (root / "json" / "f.json").write_text(json.dumps([item(f"clip{i}", i, 3, (0.5, 3.5)) for i in range(3)]))
    return root


def run(
    model, tokenizer, questions, predictions: Path, batch_size: int, cache: FrameCache | None = None, answerer=None
) -> list[dict]:
    dataset = MVBenchDataset(questions, SPEC, cache)
    loader = question_loader(dataset, MVBenchCollator(tokenizer, None, "vicuna_v0"), batch_size, 0)
    answer_questions(loader, answerer or LetterLogitsAnswerer(model, tokenizer), "letter_logits", predictions)
    return run_records(questions, predictions)


def test_mvbench_rule_reads_one_indexed_frame_folders_like_the_reference(tmp_path):
    folder = tmp_path / "frames"
    frame_folder(folder, 10)
    frames = read_media(folder, "frame", FrameSampling(4, MVBENCH_SAMPLE))
    # Reference: max_frame = 10 files, first_idx = 1 -> files 00002, 00004, 00006, 00009.
    assert official_mvbench_indices(4, 3.0, 10, first_idx=1) == [2, 4, 6, 9]
    assert [int(round(f[0, 0, 0].item() / 8)) for f in frames] == [1, 3, 5, 8]


def test_mvbench_rule_on_a_video_with_a_bound(tmp_path):
    path = write_video(tmp_path / "ramp.mp4", ramp_frames(30), fps=10)
    frames = read_media(path, "video", FrameSampling(4, MVBENCH_SAMPLE), bound=(0.5, 2.5))
    expected = official_mvbench_indices(4, 10.0, 29, bound=(0.5, 2.5))
    assert [int(round(f[..., 0].float().mean().item() / 8)) for f in frames] == expected


def test_cache_is_keyed_on_the_folder_and_reused(tasks_json_root, tmp_path):
    questions = load_questions(tasks_json_root)
    a0 = next(q for q in questions if q.task == "clips_a" and q.index == 0)
    b0 = next(q for q in questions if q.task == "clips_b" and q.index == 0)
    assert a0.video.name == b0.video.name and cache_key(a0, SPEC) != cache_key(b0, SPEC)
    assert cache_key(a0, SPEC) != cache_key(a0, FrameSpec(8, 32))
    cache = FrameCache(tmp_path / "cache")
    dataset = MVBenchDataset([a0, b0], SPEC, cache)
    first = [dataset[i]["pixel_values"] for i in range(2)]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    assert not torch.equal(first[0], first[1])
    again = [dataset[i]["pixel_values"] for i in range(2)]
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert torch.equal(first[0], MVBenchDataset([a0], SPEC)[0]["pixel_values"])


def test_batch_size_does_not_change_any_prediction(model, tokenizer, tasks_json_root, tmp_path):
    questions = load_questions(tasks_json_root)
    runs = {bs: run(model, tokenizer, questions, tmp_path / f"p{bs}.jsonl", bs) for bs in (1, 4)}
    letters = {bs: [r["letter"] for r in records] for bs, records in runs.items()}
    assert letters[1] == letters[4]
    assert len(set(letters[1])) > 1, "a constant answer would make this test vacuous"
    for records in runs.values():
        for mine, alone in zip(records, runs[1]):
            np.testing.assert_allclose(mine["letter_probs"], alone["letter_probs"], atol=1e-5)


def test_generate_answers_do_not_depend_on_the_batch(model, tokenizer, tasks_json_root):
    questions = load_questions(tasks_json_root)[:4]
    collate = MVBenchCollator(tokenizer, None, "vicuna_v0")
    items = [MVBenchDataset(questions, SPEC)[i] for i in range(4)]
    answerer = GenerateAnswerer(model, tokenizer, "vicuna_v0", max_new_tokens=6)
    together = [a.prediction for a in answerer(collate(items))]
    alone = [answerer(collate([x]))[0].prediction for x in items]
    assert together == alone
    assert all(p.startswith("(") for p in together)


def test_batched_generation_gives_the_per_question_loops_answers(tokenizer, tasks_json_root, tmp_path):
    """The batched official protocol against the notebook's one-question loop, through the resumable run.

    A wider initialisation makes the tiny random LLM's outputs differ per question (else the test is vacuous).
    """
    model = tiny_model(tokenizer, initializer_range=0.3)
    questions = load_questions(tasks_json_root)
    runs = {}
    for batched in (True, False):
        answerer = GenerateAnswerer(model, tokenizer, "vicuna_v0", max_new_tokens=8, batched=batched)
        runs[batched] = run(model, tokenizer, questions, tmp_path / f"{batched}.jsonl", 4, answerer=answerer)
    outputs = {batched: [r["output"] for r in records] for batched, records in runs.items()}
    agree = sum(a == b for a, b in zip(outputs[True], outputs[False])) / len(questions)
    assert agree >= 0.99, list(zip(outputs[True], outputs[False]))
    assert len(set(outputs[True])) > 1, "a constant output would make this test vacuous"


def test_letter_logits_is_the_restricted_next_token_argmax(model, tokenizer, tasks_json_root):
    question = load_questions(tasks_json_root)[0]
    batch = MVBenchCollator(tokenizer, None, "vicuna_v0")([MVBenchDataset([question], SPEC)[0]])
    answer = LetterLogitsAnswerer(model, tokenizer)(batch)[0]
    logits = model.next_token_logits(batch["pixel_values"], batch["input_ids_before"], batch["input_ids_after"])[0]
    letter_ids = [tokenizer.convert_tokens_to_ids(c) for c in "ABCD"]
    assert answer.prediction == "(" + "ABCD"[int(logits[letter_ids].argmax())]
    assert answer.extra["argmax_is_letter"] == (int(logits.argmax()) in letter_ids)
    assert batch["input_ids_before"][0][0] == tokenizer.bos_token_id
    assert tokenizer.bos_token_id not in batch["input_ids_after"][0].tolist()
    text = build_prompt(question.question, question.candidates).text
    assert tokenizer.decode(batch["input_ids_after"][0]) == text.split("<VideoHere>")[1]


def test_the_oracle_writes_the_answer_where_the_visual_tokens_go_and_runs_text_only(model, tokenizer, tasks_json_root):
    question = load_questions(tasks_json_root)[1]
    collate = MVBenchCollator(tokenizer, None, "vicuna_v0", answer_in_slot=4)
    batch = collate([MVBenchDataset([question], SPEC, blind=True)[0]])
    assert batch["pixel_values"] is None and batch["input_ids_after"][0].numel() == 0
    text = build_prompt(question.question, question.candidates).text
    slot = " ".join([question.answer] * 4)
    assert tokenizer.decode(batch["input_ids_before"][0][1:]) == text.replace("<VideoHere>", slot)
    ids = batch["input_ids_before"][0][None]
    expected = model.llm(input_ids=ids).logits[0, -1]
    torch.testing.assert_close(model.next_token_logits(**model_inputs(batch))[0], expected)


class Interrupted(RuntimeError):
    pass


def interrupt_after(loader, batches: int):
    for number, batch in enumerate(loader):
        if number == batches:
            raise Interrupted
        yield batch


def test_resume_after_an_interruption_answers_only_the_rest(model, tokenizer, tasks_json_root, tmp_path):
    questions = load_questions(tasks_json_root)
    predictions = tmp_path / "predictions.jsonl"
    answerer = LetterLogitsAnswerer(model, tokenizer)
    loader = question_loader(MVBenchDataset(questions, SPEC), MVBenchCollator(tokenizer, None, "vicuna_v0"), 2, 0)
    with pytest.raises(Interrupted):
        answer_questions(interrupt_after(loader, 2), answerer, "letter_logits", predictions)
    with predictions.open("a") as f:
        f.write('{"task": "clips_b", "ind')  # the line a killed process leaves half-written
    todo = pending_questions(questions, predictions)
    assert len(todo) == len(questions) - 4
    loader = question_loader(MVBenchDataset(todo, SPEC), MVBenchCollator(tokenizer, None, "vicuna_v0"), 2, 0)
    assert answer_questions(loader, answerer, "letter_logits", predictions) == len(todo)
    assert pending_questions(questions, predictions) == []
    resumed = run_records(questions, predictions)
    fresh = run(model, tokenizer, questions, tmp_path / "fresh.jsonl", 3)
    assert [r["letter"] for r in resumed] == [r["letter"] for r in fresh]
    assert len(predictions.read_text().splitlines()) == len(questions)


def test_missing_media_is_counted_per_task_and_scored_wrong(model, tokenizer, tasks_json_root, tmp_path):
    (tasks_json_root / "video" / "b" / "v1.mp4").unlink()
    (tasks_json_root / "video" / "a" / "v2.mp4").write_bytes(b"not a video")
    for jpg in (tasks_json_root / "video" / "tv" / "clip0").glob("*.jpg"):
        jpg.unlink()
    questions = load_questions(tasks_json_root)
    assert missing_media(questions) == [
        str(tasks_json_root / "video" / "b" / "v1.mp4"),
        str(tasks_json_root / "video" / "tv" / "clip0"),
    ]
    with pytest.raises(FileNotFoundError, match="2 media paths are missing") as stopped:
        check_media(questions, strict=True)
    assert "clip0" in str(stopped.value) and "v1.mp4" in str(stopped.value)
    records = run(model, tokenizer, questions, tmp_path / "p.jsonl", 4)
    results = aggregate(records)
    assert {name: t["missing_media"] for name, t in results["tasks"].items()} == {
        "clips_a": 1,
        "clips_b": 1,
        "frames": 1,
    }
    assert results["n"] == 9
    for record in records:
        if record["missing_media"]:
            assert not record["correct_official"] and not record["correct_strict"] and record["media_error"]


def test_main_branch_layout_runs_end_to_end(model, tokenizer, tmp_path):
    root = tmp_path / "MVBench"
    (root / "json").mkdir(parents=True)
    for i in range(2):
        noise_video(root / "video" / "star" / "Charades_v1_480" / f"X{i}.mp4", seed=i, frames=40)
        frame_folder(root / "video" / "tvqa" / "frames_fps3_hq" / f"s0{i}", 20)
    (root / "json" / "action_sequence.json").write_text(
        json.dumps([item(f"X{i}.mp4", i, 4, (0.4, 3.0)) for i in range(2)])
    )
    (root / "json" / "episodic_reasoning.json").write_text(
        json.dumps([item(f"s0{i}", i, 4, (1.0, 5.0)) for i in range(2)])
    )
    questions = load_questions(root, tasks=["AS", "ER"])
    records = run(model, tokenizer, questions, tmp_path / "p.jsonl", 3, FrameCache(tmp_path / "c"))
    results = aggregate(records, {"frames": SPEC.num_frames})
    write_results(results, tmp_path / "results.json")
    plot_results(results, tmp_path / "results.png", "synthetic of run")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["n"] == 4 and set(saved["tasks"]) == {"Action Sequence", "Episodic Reasoning"}
    assert {"n", "correct", "acc", "acc_strict", "chance", "missing_media", "unparsed"} <= set(
        saved["tasks"]["Action Sequence"]
    )
    assert saved["tasks"]["Action Sequence"]["missing_media"] == 0
    assert (tmp_path / "results.png").stat().st_size > 0


def test_predictions_of_other_settings_or_weights_are_set_aside(tmp_path):
    predictions = tmp_path / "predictions.jsonl"
    start_or_resume(tmp_path, {"frames": 8, "init_from": [["last.ckpt", 10, 1]]})
    predictions.write_text('{"task": "t", "index": 0}\n')
    start_or_resume(tmp_path, {"frames": 8, "init_from": [["last.ckpt", 10, 1]]})
    assert predictions.is_file()
    start_or_resume(tmp_path, {"frames": 8, "init_from": [["last.ckpt", 10, 2]]})
    assert not predictions.exists() and (tmp_path / "predictions.jsonl.stale").is_file()


def test_a_letter_merged_into_the_answer_prefix_is_refused():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["Best option:(A"] * 20, trainer)
    merging = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    with pytest.raises(ValueError, match="does not tokenize as one token"):
        letter_token_ids(merging, 4)
    assert letter_token_ids(char_tokenizer(), 3) == [char_tokenizer().convert_tokens_to_ids(c) for c in "ABC"]


def test_strict_media_also_stops_on_an_unreadable_file(model, tokenizer, tasks_json_root, tmp_path):
    """Finding 11: strict_media stopped on missing files only; a corrupt one was scored wrong silently."""
    (tasks_json_root / "video" / "a" / "v2.mp4").write_bytes(b"not a video")
    questions = load_questions(tasks_json_root)
    check_media(questions, strict=True)  # present, so the up-front check passes
    loader = question_loader(MVBenchDataset(questions, SPEC), MVBenchCollator(tokenizer, None, "vicuna_v0"), 1, 0)
    predictions = tmp_path / "p.jsonl"
    answerer = LetterLogitsAnswerer(model, tokenizer)
    with pytest.raises(MediaReadError, match=r"v2.mp4: unreadable .*strict_media") as stopped:
        answer_questions(loader, answerer, "letter_logits", predictions, strict=True)
    assert "\n" not in str(stopped.value)
    assert len(pending_questions(questions, predictions)) == len(questions) - 2  # the two before it are kept


def test_a_predictions_file_cut_inside_a_utf8_character_resumes(tmp_path):
    """Finding 11: a kill inside a multi-byte character made every later run crash on the file."""
    predictions = tmp_path / "predictions.jsonl"
    whole = json.dumps({"task": "t", "index": 0, "output": "café"}, ensure_ascii=False) + "\n"
    cut = json.dumps({"task": "t", "index": 1, "output": "naïve"}, ensure_ascii=False).encode()
    predictions.write_bytes(whole.encode() + cut[: cut.index("ï".encode()) + 1])
    assert set(load_predictions(predictions)) == {("t", 0)}
    with PredictionLog(predictions) as log:
        log.write({"task": "t", "index": 1, "output": "naïve"})
    assert set(load_predictions(predictions)) == {("t", 0), ("t", 1)}


@pytest.mark.parametrize("name", ["tasks.json", "json/a.json"])
def test_a_malformed_task_or_question_file_is_named(tasks_json_root, name):
    (tasks_json_root / name).write_text('{"clips_a": {"json": "a.json",')
    with pytest.raises(ValueError, match=f"{tasks_json_root / name}: not valid JSON") as bad:
        load_questions(tasks_json_root)
    assert "\n" not in str(bad.value)
