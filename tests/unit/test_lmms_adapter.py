"""The lmms-eval adapter's pieces that need no model, and its registration as lmms-eval 0.7 reads it.

Where lmms-eval is importable, its own registry loads our entry point; elsewhere those tests skip, and the
entry point is checked with importlib.metadata against a distribution written from pyproject.toml.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata, util
from pathlib import Path

import pytest
import tomllib

from benchmarks.lmms_eval_prompt import lmms_eval_letter, lmms_eval_text
from videochat2.integrations.lmms_adapter import (
    LmmsAdapter,
    cut_at,
    flat_visuals,
    generation_settings,
    stop_sequences,
)

REPO = Path(__file__).resolve().parents[2]
GROUP = "lmms_eval.models"
HAS_LMMS_EVAL = util.find_spec("lmms_eval") is not None


def test_greedy_settings_drop_sampling_knobs_and_until():
    lmms_mvbench = {"max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False}
    assert generation_settings({**lmms_mvbench, "until": ["\n\n"]}) == {
        "max_new_tokens": 16,
        "num_beams": 1,
        "do_sample": False,
    }
    sampled = generation_settings({"do_sample": True, "temperature": 0.7, "top_p": 0.9})
    assert sampled == {"do_sample": True, "temperature": 0.7, "top_p": 0.9}


def test_unused_generation_keys_are_reported_once(caplog):
    generation_settings({"max_new_tokens": 4, "image_aspect_ratio": "pad"})
    generation_settings({"max_new_tokens": 4, "image_aspect_ratio": "pad"})
    assert caplog.text.count("image_aspect_ratio") == 1


def test_until_cuts_at_the_earliest_stop():
    assert stop_sequences({"until": "\n\n"}) == ["\n\n"] and stop_sequences({}) == []
    assert cut_at("B) a circle.\n\nC", ["\n\n", "."]) == "B) a circle"
    assert cut_at("no stop here", ["###"]) == "no stop here"


def test_visuals_are_flattened():
    assert flat_visuals([["a.mp4"]]) == ["a.mp4"] and flat_visuals(None) == [] and flat_visuals("a.mp4") == ["a.mp4"]


def test_unknown_model_args_fail_before_loading():
    with pytest.raises(ValueError, match="unknown videochat2 model_args: conv_template"):
        LmmsAdapter(pretrained="does-not-exist", conv_template="vicuna")


@pytest.mark.slow  # starts fresh interpreters importing torch
def test_import_videochat2_leaves_the_integrations_alone():
    code = (
        "import sys, videochat2; bare = 'videochat2.integrations' in sys.modules; "
        "import videochat2.integrations.lmms_adapter; "
        "print(bare, [m for m in sys.modules if m.startswith(('lmms_eval', 'videochat2.integrations.lmms_eval'))])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False []"


def entry_point_value() -> str:
    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    return entry_points[GROUP]["videochat2_lightning"]


@pytest.fixture
def installed_entry_point(tmp_path, monkeypatch) -> str:
    """A distribution on sys.path whose entry_points.txt holds pyproject.toml's lmms_eval.models group, as an
    installed (editable or not) package would have it."""
    dist = tmp_path / "videochat2_lightning_probe-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: videochat2-lightning-probe\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[{GROUP}]\nvideochat2_lightning = {entry_point_value()}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return entry_point_value()


def test_entry_point_names_the_manifest_function(installed_entry_point):
    """The probe and, once the project is installed, the project itself declare it: every declaration agrees."""
    found = [ep for ep in metadata.entry_points(group=GROUP) if ep.name == "videochat2_lightning"]
    assert {ep.value for ep in found} == {installed_entry_point} == {"videochat2.integrations.lmms_eval:manifests"}
    assert util.find_spec(found[0].module) is not None


@pytest.mark.skipif(not HAS_LMMS_EVAL, reason="lmms-eval is not installed (pip install -e '.[lmms-eval]')")
def test_lmms_eval_registry_resolves_the_entry_point_to_the_class(installed_entry_point):
    from lmms_eval.api.model import lmms
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    from videochat2.integrations.lmms_eval import VideoChat2Lightning

    registry = ModelRegistryV2()
    registry.load_entrypoint_manifests()
    cls = registry.get_model_class("videochat2_lightning")
    assert cls is VideoChat2Lightning and issubclass(cls, lmms) and cls.is_simple
    with pytest.raises(ValueError, match="unknown videochat2 model_args"):
        cls.create_from_arg_string("pretrained=nowhere,conv_template=x", {"batch_size": 2, "device": None})


REPLIES = [
    "(B) a circle",
    "B. red",
    "a red circle",
    "The answer is C.",
    "",
    "once",
    "d) twice",
    "Best option: (A) once",
]


def test_lmms_eval_prompt_and_reading_of_replies():
    assert lmms_eval_text("What moves?", ["a circle", "a square"]) == (
        "Question:What moves?\nOption:\n(A) a circle\n(B) a square\nOnly give the best option.\n"
    )
    # lmms-eval reads the article "a" as option A and an unlettered reply as itself (never right).
    assert [lmms_eval_letter(r) for r in REPLIES] == ["B", "B", "A", "C", "", "once", "D", "A"]


@pytest.mark.skipif(not HAS_LMMS_EVAL, reason="lmms-eval is not installed (pip install -e '.[lmms-eval]')")
def test_prompt_and_scorer_agree_with_lmms_eval_itself():
    import lmms_eval

    # Loaded by file: the tasks package's __init__ imports datasets and every task, which this does not need.
    path = Path(lmms_eval.__file__).parent / "tasks" / "mvbench" / "utils.py"
    spec = util.spec_from_file_location("lmms_eval_mvbench_utils", path)
    utils = util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    doc = {"question": "What moves?", "candidates": ["a circle", "a square", "nothing"]}
    kwargs = {"post_prompt": "Only give the best option.\n"}
    assert utils.mvbench_doc_to_text(doc, kwargs) == lmms_eval_text(doc["question"], doc["candidates"])
    for reply in REPLIES:
        for gold in "ABC":
            assert bool(utils.mcq_acc(gold, reply)) == (lmms_eval_letter(reply) == gold), (reply, gold)
