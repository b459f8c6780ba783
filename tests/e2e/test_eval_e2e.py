"""`python eval.py` composes as documented and runs end to end on a tiny model trained in the test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from recipes.cli import quote_stage_overrides
from recipes.evaluate import evaluate, frame_spec, output_dir
from recipes.schema import register
from tests.conftest import run_script, train_overrides
from videochat2.eval.mvbench.data import FrameSpec

# Every test here trains or loads a trained run: the fast lane (`make test-fast`) leaves them out.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TASK_KEYS = {"n", "correct", "acc", "acc_strict", "chance", "missing_media", "unparsed"}


def compose_eval(overrides: list[str]):
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("eval", overrides=quote_stage_overrides(overrides))


def test_default_eval_is_the_stage3_model_on_the_synthetic_benchmark():
    cfg = compose_eval([])
    assert cfg.stage == 3 and cfg.module._target_ == "lightning_modules.VideoChat2Module"
    assert cfg.benchmark.name == "synthetic" and cfg.benchmark.root == "data/synthetic/mvbench"
    assert cfg.eval.answerer == "letter_logits" and cfg.model.init_from == "auto"
    assert str(output_dir(cfg)) == "outputs/default/eval/synthetic"


def test_documented_eval_command_lines_compose():
    cfg = compose_eval(["benchmark=mvbench", "benchmark.root=/data/MVBench", "model.init_from=/ckpt/videochat2.pth"])
    assert cfg.benchmark.root == "/data/MVBench" and cfg.benchmark.num_frames == 16
    assert frame_spec(cfg, None) == FrameSpec(16, 224, "official", "clip")  # the official evaluator's frames
    ours = compose_eval(["benchmark=mvbench", "benchmark.transform=test"])
    assert frame_spec(ours, None) == FrameSpec(16, 224, "test", "imagenet")
    cfg = compose_eval(["benchmark=retrieval"])
    assert cfg.stage == 1 and cfg.module._target_ == "lightning_modules.AlignmentModule"
    cfg = compose_eval(
        ["eval.answerer=generate", "eval.blind=true", "data.num_frames=1", "benchmark.transform=official"]
    )
    assert str(output_dir(cfg)) == "outputs/default/eval/synthetic-generate-blind-1f-official"
    assert compose_eval(["eval.tag=abl", "run_name=r"]).run_name == "r"
    assert str(output_dir(compose_eval(["eval.tag=abl"]))) == "outputs/default/eval/synthetic-abl"


def run_cli(script: str, args: list[str]) -> subprocess.CompletedProcess:
    return run_script(script, *args)


@pytest.fixture(scope="module")
def trained(dirs, chained_run) -> dict[str, Path]:
    """The session's small run `t` (three training stages of a few steps)."""
    return dirs


def test_eval_runs_end_to_end_and_resumes(trained):
    paths = [f"paths.data_dir={trained['data']}", f"paths.output_root={trained['out']}", "run_name=t"]
    printed = run_cli("eval.py", [*paths, "eval.num_workers=1"]).stdout
    out = trained["out"] / "t" / "eval" / "synthetic"
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 36 and len(results["tasks"]) == 9 and "Avg (total-weighted)" in printed
    assert {"avg", "avg_strict", "macro_avg"} <= results.keys()
    assert all(TASK_KEYS <= t.keys() for t in results["tasks"].values())
    assert results["settings"]["frames"] == 8 and results["settings"]["size"] == 64
    assert results["settings"]["normalisation"] == "imagenet" and results["settings"]["answerer"] == "letter_logits"
    assert results["settings"]["checkpoint"] == "t/stage3/checkpoints/last.ckpt"
    recorded = [entry[0] for entry in json.loads((out / "settings.json").read_text())["init_from"]]
    assert recorded == [f"t/stage{s}/checkpoints/last.ckpt" for s in (1, 2, 3)]
    assert (out / "results.png").stat().st_size > 0
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 36 and all("argmax_is_letter" in json.loads(line) for line in lines)

    again = evaluate(compose_eval([*paths, "eval.num_workers=0"]))
    assert (out / "predictions.jsonl").read_text().splitlines() == lines
    assert again["avg"] == results["avg"]


def test_batched_official_protocol_agrees_with_the_per_question_loop(trained):
    """The official protocol (greedy, 100 tokens, stop at the family's stop string) on the embedded benchmark:
    whole batches decoded together give the notebook loop's answers on >= 99% of the questions."""
    paths = [f"paths.data_dir={trained['data']}", f"paths.output_root={trained['out']}", "run_name=t"]
    common = [*paths, "eval.num_workers=0", "eval.answerer=generate", "eval.batch_size=12"]
    outputs = {}
    for batched in ("true", "false"):
        cfg = compose_eval([*common, f"eval.generate_batched={batched}", f"eval.tag=generate-{batched}"])
        results = evaluate(cfg)
        assert results["settings"]["generate_batched"] == (batched == "true")
        lines = (output_dir(cfg) / "predictions.jsonl").read_text().splitlines()
        outputs[batched] = {(r["task"], r["index"]): r["output"] for r in map(json.loads, lines)}
    assert outputs["true"].keys() == outputs["false"].keys() and len(outputs["true"]) == 36
    same = sum(outputs["true"][k] == outputs["false"][k] for k in outputs["true"])
    assert same / len(outputs["true"]) >= 0.99


def test_torchrun_with_two_cpu_processes_gives_the_one_process_result(trained):
    """The documented multi-GPU command, on CPUs (gloo): shards merged by rank 0, results as one process."""
    paths = [f"paths.data_dir={trained['data']}", f"paths.output_root={trained['out']}", "run_name=t"]
    common = [*paths, "device=cpu", "eval.num_workers=0", "eval.batch_size=4"]
    single = evaluate(compose_eval([*common, "eval.tag=one"]))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = subprocess.run(
        [*launcher, "eval.py", *common, "eval.tag=two"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = trained["out"] / "t" / "eval" / "synthetic-two"
    assert not list(out.glob("predictions.rank*.jsonl"))
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 36
    two = json.loads((out / "results.json").read_text())
    assert two["tasks"] == single["tasks"] and two["avg"] == single["avg"]


def test_blind_oracle_and_single_frame_baselines_get_their_own_folders(trained):
    paths = [
        f"paths.data_dir={trained['data']}",
        f"paths.output_root={trained['out']}",
        "run_name=t",
        "eval.num_workers=0",
        "eval.tasks=[MD,AS]",
    ]
    blind = evaluate(compose_eval([*paths, "eval.blind=true"]))
    single = evaluate(compose_eval([*paths, "data.num_frames=1"]))
    oracle = evaluate(compose_eval([*paths, "eval.oracle=true"]))
    assert blind["n"] == single["n"] == oracle["n"] == 8
    assert blind["settings"]["blind"] and single["settings"]["frames"] == 1 and oracle["settings"]["oracle"]
    for name in ("synthetic-blind", "synthetic-1f", "synthetic-oracle"):
        assert (trained["out"] / "t" / "eval" / name / "results.json").is_file()
    assert (trained["out"] / "t" / "eval" / "synthetic-variants.png").stat().st_size > 0
    with pytest.raises(ValueError, match="opposite baselines"):
        evaluate(compose_eval([*paths, "eval.blind=true", "eval.oracle=true"]))


def test_retrieval_reports_similarity_and_reranked_recalls(trained):
    paths = [
        f"paths.data_dir={trained['data']}",
        f"paths.output_root={trained['out']}",
        "run_name=t",
        "eval.num_workers=0",
        "eval.k_test=3",
    ]
    results = evaluate(compose_eval(["benchmark=retrieval", *paths]))
    assert results["n_videos"] == results["n_texts"] == 10
    for scores in ("itc", "itm"):
        assert {"r1_t2v", "r5_t2v", "r10_t2v", "r1_v2t", "r5_v2t", "r10_v2t", "r_mean"} <= results[scores].keys()
        assert results[scores]["r10_t2v"] == 100.0
    saved = json.loads((trained["out"] / "t" / "eval" / "retrieval" / "results.json").read_text())
    assert saved["settings"]["frames"] == 4 and saved["settings"]["k_test"] == 3


def test_probe_names_its_output_after_the_stage():
    assert str(output_dir(compose_eval(["benchmark=probe"]))) == "outputs/default/eval/probe-stage3"
    cfg = compose_eval(["benchmark=probe", "stage=1"])
    assert str(output_dir(cfg)) == "outputs/default/eval/probe-stage1"
    assert cfg.module._target_ == "lightning_modules.AlignmentModule"


@pytest.mark.parametrize("stage", [1, 3])
def test_probe_reads_every_task_after_stage_1_and_stage_3(trained, stage):
    # All clips of the small world (training, retrieval and benchmark ones, a frame folder task among
    # them): its ten per task let the closed-answer tasks be probed; the training clips alone are too few.
    paths = [
        f"paths.data_dir={trained['data']}",
        f"paths.output_root={trained['out']}",
        "run_name=t",
        "eval.num_workers=0",
        "benchmark.path_prefix=null",
        f"stage={stage}",
    ]
    results = evaluate(compose_eval(["benchmark=probe", *paths]))
    events = json.loads((trained["data"] / "synthetic" / "annotations" / "events.json").read_text())
    assert results["n"] == len(events)
    assert set(results["tasks"]) | set(results["skipped"]) == {e["task"] for e in events}
    assert {"action_count", "state_change", "action_localization"} <= results["tasks"].keys()
    assert "character_order" in results["skipped"]
    for row in results["tasks"].values():
        assert all(0.0 <= row[key] <= 100.0 for key in ("majority", "vit", "visual_tokens"))
    saved = json.loads((trained["out"] / "t" / "eval" / f"probe-stage{stage}" / "results.json").read_text())
    assert saved["settings"]["stage"] == stage and saved["settings"]["frames"] == (4 if stage == 1 else 8)


def test_a_checkpoint_without_the_projection_is_refused_not_scored_with_a_random_one(trained):
    """Only training may start a component fresh: evaluating a stage-1 file as a stage-3 model names what is missing."""
    stage1 = trained["out"] / "t" / "stage1" / "checkpoints" / "last.ckpt"
    paths = [f"paths.data_dir={trained['data']}", f"paths.output_root={trained['out']}", "run_name=noproj"]
    result = run_script("eval.py", *paths, f"model.init_from=[{stage1}]", check=False)
    assert result.returncode != 0
    assert "llm_proj.weight" in result.stderr and "found in none of" in result.stderr
    assert not (trained["out"] / "noproj" / "eval" / "synthetic" / "results.json").exists()


def test_a_sweep_job_is_evaluated_with_its_earlier_stages(trained):
    from videochat2.loader import load_model

    run_script(
        "train.py",
        "-m",
        "stage=3",
        "model.num_query=32,64",
        *train_overrides(trained, run="sw", steps=1),
        "model.init_from=" + str(trained["out"] / "t" / "stage2"),
    )
    job = trained["out"] / "sw" / "stage3" / "1"
    loaded = load_model(job)
    assert [Path(p) for p in loaded.checkpoints] == [
        *(trained["out"] / "t" / f"stage{s}" / "checkpoints" / "last.ckpt" for s in (1, 2)),
        job / "checkpoints" / "last.ckpt",
    ]
    assert loaded.model.config.num_query == 64
    assert set(loaded.report.allowed_missing.values()) == {"base LLM: read from its own directory"}
    paths = [f"paths.data_dir={trained['data']}", f"paths.output_root={trained['out']}", "run_name=sw"]
    run_script("eval.py", *paths, f"model.init_from={job}", "eval.num_workers=0", "eval.tag=job1")
    saved = json.loads((trained["out"] / "sw" / "eval" / "synthetic-job1" / "results.json").read_text())
    assert saved["settings"]["checkpoint"] == "sw/stage3/1/checkpoints/last.ckpt"


def test_a_run_trained_from_nothing_is_evaluated_from_its_own_record(trained):
    """A stage-3 run with model.init_from=none has no stages 1-2; evaluation must not ask for them."""
    run_script("train.py", "stage=3", "model.init_from=none", *train_overrides(trained, run="fresh", steps=1))
    paths = [f"paths.data_dir={trained['data']}", f"paths.output_root={trained['out']}", "run_name=fresh"]
    run_script("eval.py", *paths, "eval.num_workers=0", "eval.limit=1")
    assert (trained["out"] / "fresh" / "eval" / "synthetic" / "results.json").is_file()
