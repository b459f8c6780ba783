"""Where the users run: the embedded pipeline on one CUDA GPU (skipped, with the reason, without one).

Stages 1 -> 2 -> 3 -> eval with `trainer=gpu`; `trainer=fsdp trainer.devices=1` with activation checkpointing,
a sharded checkpoint, a resume from it and an evaluation of it; QLoRA nf4; `precision=bf16-true`; evaluation
on the GPU against the CPU; chat on the GPU, also with the LLM in 4 bits. Together a few minutes on one GPU.

Data: the small synthetic set of `tests.conftest` (built here when PyAV is installed), or a prebuilt one named
by `VIDEOCHAT2_TEST_DATA` (a directory holding `synthetic/`, built on another machine by
`python -m tests.gpu.prepare DIR`): GPU hosts without PyAV use that.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_script, train_overrides

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

STEPS = 4


@pytest.fixture(scope="module")
def gpu_dirs(tmp_path_factory) -> dict[str, Path]:
    """The small synthetic set (prebuilt where VIDEOCHAT2_TEST_DATA says) and a fresh output root."""
    prebuilt = os.environ.get("VIDEOCHAT2_TEST_DATA")
    if prebuilt:
        data = Path(prebuilt)
        if not (data / "synthetic").is_dir():
            pytest.fail(f"VIDEOCHAT2_TEST_DATA={prebuilt} holds no synthetic/ (build it with tests.gpu.prepare)")
    else:
        from tests.gpu.prepare import prepare

        data = prepare(tmp_path_factory.mktemp("data"))
    return {"data": data, "out": tmp_path_factory.mktemp("outputs")}


def gpu_train(dirs: dict[str, Path], run: str, *args: str, steps: int = STEPS) -> None:
    run_script("train.py", *args, *train_overrides(dirs, run=run, steps=steps))


def gpu_eval(dirs: dict[str, Path], run: str, *args: str) -> dict:
    paths = [f"paths.data_dir={dirs['data']}", f"paths.output_root={dirs['out']}", f"run_name={run}"]
    run_script("eval.py", *paths, "eval.num_workers=2", *args)
    tag = next((a.split("=", 1)[1] for a in args if a.startswith("eval.tag=")), None)
    name = "synthetic" + (f"-{tag}" if tag else "")
    return json.loads((dirs["out"] / run / "eval" / name / "results.json").read_text())


def predictions(dirs: dict[str, Path], run: str, tag: str) -> dict[tuple[str, int], dict]:
    path = dirs["out"] / run / "eval" / f"synthetic-{tag}" / "predictions.jsonl"
    return {(r["task"], r["index"]): r for r in map(json.loads, path.read_text().splitlines())}


def margin(record: dict) -> float:
    """How far the chosen letter's probability is ahead of the runner-up's."""
    top = sorted(record["letter_probs"], reverse=True)
    return top[0] - top[1]


@pytest.fixture(scope="module")
def gpu_run(gpu_dirs) -> Path:
    """Run `g`: the README's three stages with `trainer=gpu` (bf16-mixed)."""
    gpu_train(gpu_dirs, "g", "trainer=gpu")
    gpu_train(gpu_dirs, "g", "stage=2", "model.num_query=64", "trainer=gpu")
    gpu_train(gpu_dirs, "g", "stage=3", "trainer=gpu")
    return gpu_dirs["out"] / "g"


def test_three_stages_then_eval_on_the_gpu(gpu_dirs, gpu_run):
    for stage in (1, 2, 3):
        summary = json.loads((gpu_run / f"stage{stage}" / "summary.json").read_text())
        assert summary["steps"] == STEPS
    results = gpu_eval(gpu_dirs, "g", "device=cuda", "eval.tag=gpu")
    assert results["n"] == 36 and 0.0 <= results["avg"] <= 100.0


def test_eval_on_the_gpu_agrees_with_the_cpu(gpu_dirs, gpu_run):
    """fp16 visual autocast on the GPU (the original's precision) against fp32 on the CPU: >= 99% same letters.

    A tiny model trained a few steps has near ties, which fp16 may flip; letters the CPU chose by less than
    0.02 of probability are left out of the count (and their number is bounded), the rest must agree."""
    gpu_eval(gpu_dirs, "g", "device=cuda", "eval.tag=gpu")
    gpu_eval(gpu_dirs, "g", "device=cpu", "eval.tag=cpu")
    on_gpu, on_cpu = predictions(gpu_dirs, "g", "gpu"), predictions(gpu_dirs, "g", "cpu")
    assert on_gpu.keys() == on_cpu.keys()
    clear = [k for k in on_cpu if margin(on_cpu[k]) > 0.02]
    assert len(clear) >= 0.75 * len(on_cpu), "too many near ties for the comparison to say anything"
    same = sum(on_gpu[k]["letter"] == on_cpu[k]["letter"] for k in clear)
    assert same / len(clear) >= 0.99
    for key in on_cpu:
        np.testing.assert_allclose(on_gpu[key]["letter_probs"], on_cpu[key]["letter_probs"], atol=0.05)


def test_fsdp_on_one_gpu_checkpoints_sharded_resumes_and_evaluates(gpu_dirs, gpu_run):
    """Activation checkpointing of the decoder layers with a padded batch (the KV-cache failure), a sharded
    `last.ckpt/`, a second run resuming from it, and eval rebuilding the model from the shards."""
    stage2 = f"model.init_from={gpu_run / 'stage2'}"
    fsdp = ["stage=3", "trainer=fsdp", "trainer.devices=1", stage2]
    gpu_train(gpu_dirs, "f1", *fsdp, steps=2)
    sharded = gpu_dirs["out"] / "f1" / "stage3" / "checkpoints" / "last.ckpt"
    assert sharded.is_dir() and (sharded / ".metadata").is_file()
    gpu_train(gpu_dirs, "f2", *fsdp, f"ckpt_path={sharded}", steps=4)
    assert json.loads((gpu_dirs["out"] / "f2" / "stage3" / "summary.json").read_text())["steps"] == 4
    assert (gpu_dirs["out"] / "f2" / "stage3" / "checkpoints" / "last.ckpt" / ".metadata").is_file()
    results = gpu_eval(gpu_dirs, "f2", "device=cuda", "eval.tag=fsdp")
    assert results["n"] == 36


def test_qlora_nf4_stage3_trains_and_evaluates(gpu_dirs, gpu_run):
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    llm_dir = gpu_dirs["data"] / "synthetic" / "llm"
    if not llm_dir.is_dir():
        pytest.fail(f"{llm_dir} missing: the embedded LLM directory is what nf4 quantises")
    stage2 = f"model.init_from={gpu_run / 'stage2'}"
    gpu_train(gpu_dirs, "q", "stage=3", "trainer=gpu", "model.llm.quantization=nf4", stage2, steps=2)
    assert json.loads((gpu_dirs["out"] / "q" / "stage3" / "summary.json").read_text())["steps"] == 2
    assert gpu_eval(gpu_dirs, "q", "device=cuda", "eval.tag=nf4")["n"] == 36


def test_bf16_true_stage3_trains(gpu_dirs, gpu_run):
    stage2 = f"model.init_from={gpu_run / 'stage2'}"
    gpu_train(gpu_dirs, "b", "stage=3", "trainer=gpu", "precision=bf16-true", stage2, steps=2)
    summary = json.loads((gpu_dirs["out"] / "b" / "stage3" / "summary.json").read_text())
    assert summary["steps"] == 2 and all(v == v for v in summary.get("metrics", {}).values())


def test_chat_answers_on_the_gpu(gpu_dirs, gpu_run):
    from videochat2.chat import ChatSession, read_pixels
    from videochat2.loader import load_model

    loaded = load_model(gpu_run, device="cuda")
    assert next(loaded.model.parameters()).is_cuda and loaded.model.visual_autocast == torch.float16
    video = sorted((gpu_dirs["data"] / "synthetic" / "videos").rglob("*.mp4"))[0]
    pixels = read_pixels(video, "video", loaded.spec.media, "middle")
    session = ChatSession(loaded, pixels, "video", {"max_new_tokens": 12, "min_new_tokens": 2})
    answer = session.ask("What happens in the video?")
    assert isinstance(answer, str) and session.history[-1]["a"] == answer
    assert str(session.choose("What moves?", ["a circle", "a square"])) in ("(A) a circle", "(B) a square")


def test_chat_loads_the_llm_in_4_bits_on_the_gpu(gpu_dirs, gpu_run, capsys):
    import bitsandbytes as bnb

    from videochat2.chat import ChatSession, main

    chat = ChatSession.from_pretrained(gpu_run, device="cuda", load_4bit=True, max_new_tokens=6)
    layers = [m for m in chat.loaded.model.llm.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and layers[0].weight.quant_state.quant_type == "nf4"
    video = sorted((gpu_dirs["data"] / "synthetic" / "videos").rglob("*.mp4"))[0]
    assert isinstance(chat.watch(video).ask("What happens in the video?"), str)
    picks = chat.answer_batch([video, video], ["What moves?"] * 2, options=[["a circle", "a square"]] * 2)
    assert picks[0].index == picks[1].index and picks[0].option in ("a circle", "a square")
    main(["--ckpt", str(gpu_run), "--video", str(video), "--load-4bit", "--device", "cuda", "What moves?"])
    assert capsys.readouterr().out.strip()
