"""Multi-process MVBench answering: two gloo processes on the CPU give the one-process result, resuming what
a crashed run of another size left in its shards, and one process folds in shards too."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.unit.test_eval_mvbench import SPEC, char_tokenizer, tasks_json_root, tiny_model  # noqa: F401
from videochat2.builder import LoadedModel
from videochat2.eval.mvbench import load_questions
from videochat2.eval.mvbench.evaluate import AnswerOptions, evaluate_mvbench
from videochat2.eval.mvbench.run import shard_files, shard_path

SETTINGS = {"benchmark": "fake", "answerer": "letter_logits"}
OPTIONS = AnswerOptions(batch_size=2)


def loaded_model() -> LoadedModel:
    """The same seeded tiny model in every process."""
    tokenizer = char_tokenizer()
    return LoadedModel(tiny_model(tokenizer), spec=None, qformer_tokenizer=None, llm_tokenizer=tokenizer)


def evaluate_here(root: Path, out_dir: Path) -> dict:
    questions = load_questions(root)
    return evaluate_mvbench(loaded_model(), questions, SPEC, "vicuna_v0", OPTIONS, out_dir, SETTINGS)


def worker(rank: int, world: int, port: int, root: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        results = evaluate_here(Path(root), Path(out_dir))
        (Path(out_dir) / f"returned{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def crashed_run(out_dir: Path, reference: list[dict], ranks: dict[int, list[int]]) -> list[tuple[str, int]]:
    """The files a killed run of another size leaves: its settings and, per rank, some records and a torn line."""
    out_dir.mkdir(parents=True)
    (out_dir / "settings.json").write_text(json.dumps(SETTINGS, indent=2) + "\n")
    carried = []
    for rank, rows in ranks.items():
        records = [reference[i] | {"carried": True} for i in rows]
        text = "".join(json.dumps(r) + "\n" for r in records)
        shard_path(out_dir / "predictions.jsonl", rank).write_text(text + '{"task": "clips_a", "ind')
        carried += [(r["task"], r["index"]) for r in records]
    return carried


@pytest.mark.slow  # starts fresh interpreters importing torch
def test_two_processes_resume_a_crashed_three_process_run_and_match_one_process(tasks_json_root, tmp_path):  # noqa: F811
    single = evaluate_here(tasks_json_root, tmp_path / "one")
    reference = lines(tmp_path / "one" / "predictions.jsonl")
    assert len({r["letter"] for r in reference}) > 1, "a constant answer would make this test vacuous"

    out_dir = tmp_path / "two"
    carried = crashed_run(out_dir, reference, {0: [0, 4], 2: [7]})
    mp.spawn(worker, args=(2, free_port(), str(tasks_json_root), str(out_dir)), nprocs=2, join=True)

    assert shard_files(out_dir / "predictions.jsonl") == []
    merged = lines(out_dir / "predictions.jsonl")
    assert [(r["task"], r["index"]) for r in merged] == [(r["task"], r["index"]) for r in reference]
    assert sorted((r["task"], r["index"]) for r in merged if r.get("carried")) == sorted(carried)
    assert [r["letter"] for r in merged] == [r["letter"] for r in reference]
    returned = [json.loads((out_dir / f"returned{rank}.json").read_text()) for rank in (0, 1)]
    assert returned[0] == returned[1]
    assert returned[0]["tasks"] == single["tasks"] and returned[0]["avg"] == single["avg"]


def test_one_process_folds_in_the_shards_of_a_multi_process_run(tasks_json_root, tmp_path):  # noqa: F811
    evaluate_here(tasks_json_root, tmp_path / "one")
    reference = lines(tmp_path / "one" / "predictions.jsonl")
    out_dir = tmp_path / "resumed"
    carried = crashed_run(out_dir, reference, {0: [1, 3], 1: [2]})
    results = evaluate_here(tasks_json_root, out_dir)
    merged = lines(out_dir / "predictions.jsonl")
    assert shard_files(out_dir / "predictions.jsonl") == [] and len(merged) == len(reference)
    assert sorted((r["task"], r["index"]) for r in merged if r.get("carried")) == sorted(carried)
    assert [r["letter"] for r in merged] == [r["letter"] for r in reference]
    assert results["avg"] == json.loads((tmp_path / "one" / "results.json").read_text())["avg"]


def test_changed_settings_set_the_shards_aside_too(tasks_json_root, tmp_path):  # noqa: F811
    evaluate_here(tasks_json_root, tmp_path / "one")
    reference = lines(tmp_path / "one" / "predictions.jsonl")
    out_dir = tmp_path / "other"
    crashed_run(out_dir, reference, {1: [0]})
    (out_dir / "settings.json").write_text(json.dumps({"benchmark": "fake", "answerer": "generate"}))
    evaluate_here(tasks_json_root, out_dir)
    assert not any(r.get("carried") for r in lines(out_dir / "predictions.jsonl"))
    assert (out_dir / "predictions.rank1.jsonl.stale").is_file()
