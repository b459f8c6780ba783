"""benchmarks/gpu_check.sh: it parses, its collector keeps failed parts, and its CPU dry run leaves the JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check_collect import collect
from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


@pytest.mark.parametrize("script", ["gpu_check.sh", "gpu_check_prepare.sh"])
def test_the_scripts_parse(script):
    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / script)], check=True)


def test_collector_records_each_part_with_its_status(tmp_path):
    (tmp_path / "tests.xml").write_text(
        '<testsuites><testsuite tests="2" failures="1" errors="0" skipped="0">'
        '<testcase name="test_a" time="1.5"/>'
        '<testcase name="test_b" time="2"><failure message="assert 1 == 2&#10;more"/></testcase>'
        "</testsuite></testsuites>"
    )
    (tmp_path / "tests.status").write_text("1 12\n")
    (tmp_path / "train.log").write_text('{"llm7b_row": {"b": 1}}\n{"benchmark": "llm7b", "results": []}\ntext\n')
    (tmp_path / "train.status").write_text("0 100\n")
    (tmp_path / "eval.log").write_text("killed before any result\n")
    (tmp_path / "eval.status").write_text("124 90\n")
    figures = collect(tmp_path, {"device": "x"})
    assert figures["meta"] == {"device": "x"}
    tests = figures["gpu_tests"]
    assert tests["status"] == {"ran": True, "exit_code": 1, "seconds": 12, "timed_out": False}
    assert tests["report"]["tests"] == 2 and tests["report"]["failures"] == 1
    assert tests["report"]["cases"]["test_a"]["outcome"] == "passed"
    assert tests["report"]["cases"]["test_b"]["outcome"] == "failure: assert 1 == 2"
    assert figures["train_7b"]["result"] == {"benchmark": "llm7b", "results": []}
    assert figures["train_7b"]["rows_so_far"] == [{"b": 1}]
    assert figures["eval_mvbench_sized"] == {
        "status": {"ran": True, "exit_code": 124, "seconds": 90, "timed_out": True},
        "result": None,
    }


@pytest.mark.slow
def test_cpu_dry_run_runs_every_part_and_leaves_one_json(tmp_path):
    """DRY_RUN=1: the GPU tests skip with their reason, the 7B table and the evaluation run at tiny shapes.

    The data are prepared as for a GPU host (or taken from VIDEOCHAT2_TEST_DATA where they were prepared)."""
    data = Path(os.environ.get("VIDEOCHAT2_TEST_DATA") or tmp_path / "data")
    if not (data / "synthetic" / "llm").is_dir():
        subprocess.run([sys.executable, "-m", "tests.gpu.prepare", str(data)], cwd=REPO, check=True, timeout=900)
    out = tmp_path / "gpu_check.json"
    env = os.environ | {"DRY_RUN": "1", "PYTHON": sys.executable, "VIDEOCHAT2_TEST_DATA": str(data)}
    result = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(Path(out).read_text())
    assert figures["meta"]["dry_run"] is True and figures["meta"]["device"] == "cpu"
    report = figures["gpu_tests"]["report"]
    assert report["tests"] >= 6 and report["skipped"] == report["tests"]
    assert all("needs a CUDA GPU" in case["outcome"] for case in report["cases"].values())
    assert figures["train_7b"]["result"]["benchmark"] == "llm7b" and figures["train_7b"]["result"]["results"]
    evaluation = figures["eval_mvbench_sized"]["result"]
    assert evaluation["shape"] == "tiny" and evaluation["decode_clips"] > 0
    assert evaluation["vit_qformer_s"] > 0 and evaluation["llm_generate_s"] > 0
    profile = figures["train_7b_profile"]["result"]["profile"]
    assert set(profile["forward_ms"]) == {"vision_encoder", "qformer", "llm"} and profile["top_ops"]
