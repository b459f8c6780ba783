"""The embedded default is prepared once however many processes ask at the same time (torchrun, SLURM ranks)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

import pytest

from videochat2.embedded.llm import PretrainingSchedule
from videochat2.embedded.prepare import LLMPretraining, lock_path, prepare
from videochat2.models.llm import LLMConfig

TINY = dict(seed=5, train_videos=9, images=2, test_per_task=1, retrieval_videos=1, size=64, workers=1)


def tiny_llm(root: Path) -> LLMPretraining:
    return LLMPretraining(
        config=LLMConfig(hidden_size=32, intermediate_size=64, num_heads=4, num_layers=1),
        out_dir=root / "llm",
        tokenizer=root / "tokenizers" / "llm",
        corpus=("pretrain_video", "instruction_video_mc"),
        schedule=PretrainingSchedule(steps=2, batch_size=2, warmup_steps=1),
    )


def files_of(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def prepare_counting_work(root: str, marker: str, result: str, start) -> None:
    """In its own process: prepare, writing a line to `marker` for every build and every pretraining done."""
    from videochat2.embedded import build as building
    from videochat2.embedded import llm as pretraining

    def counted(kind, work):
        def run(*args, **kwargs):
            with open(marker, "a") as log:
                log.write(f"{kind}\n")
            return work(*args, **kwargs)

        return run

    building._build_into = counted("build", building._build_into)
    pretraining.build_tiny_llama = counted("pretrain", pretraining.build_tiny_llama)
    start.wait()  # both processes ask at the same moment
    prepare(root, TINY, tiny_llm(Path(root)))
    Path(result).write_text(json.dumps(files_of(Path(root))))


@pytest.mark.slow  # two fresh interpreters importing torch, on a shared CPU: about half a minute
def test_two_processes_asking_at_once_prepare_once_and_see_the_same_files(tmp_path):
    root, marker = tmp_path / "data" / "synthetic", tmp_path / "work.log"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    results = [tmp_path / f"files{i}.json" for i in range(2)]
    workers = [
        context.Process(target=prepare_counting_work, args=(str(root), str(marker), str(result), start))
        for result in results
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert sorted(marker.read_text().split()) == ["build", "pretrain"]
    seen = [json.loads(result.read_text()) for result in results]
    assert seen[0] == seen[1] == files_of(root)
    assert "MANIFEST.json" in seen[0] and "llm/pretraining.json" in seen[0]
    assert sorted(p.name for p in root.parent.iterdir()) == [lock_path(root).name, "synthetic"]


def test_a_prepared_root_is_reused_and_nothing_asked_takes_no_lock(tmp_path):
    root = tmp_path / "synthetic"
    prepare(root, TINY, tiny_llm(root))
    before = files_of(root)
    prepare(root, TINY, tiny_llm(root))
    assert files_of(root) == before
    elsewhere = tmp_path / "real" / "data"
    assert prepare(elsewhere) == elsewhere.resolve() and not elsewhere.parent.exists()
