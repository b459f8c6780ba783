"""Chat and export: every user mistake is one line, found before the model is loaded where it can be."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import videochat2.chat as chat
import videochat2.export as export_module
import videochat2.loader as loader
from videochat2.checkpoints import CheckpointError, read_state_dict
from videochat2.run_layout import RunLayout, RunLayoutError, StageDir, init_chain


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: these mistakes must be caught before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the command line was checked")

    monkeypatch.setattr(chat, "load_model", refuse)
    monkeypatch.setattr(export_module, "load_model", refuse)


def chat_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        chat.main(["--ckpt", "some_run", *argv])
    message = str(stopped.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_a_missing_media_file_is_named_before_loading(no_model, tmp_path, capsys):
    assert f"{tmp_path / 'nope.mp4'}: no such video file" in chat_error(capsys, "--video", str(tmp_path / "nope.mp4"))


def test_an_image_passed_as_video_says_to_use_image(no_model, still_image, capsys):
    assert "pass it with --image" in chat_error(capsys, "--video", str(still_image), "What?")


def test_an_empty_question_is_an_error(no_model, ramp_video, capsys):
    assert "the question is empty" in chat_error(capsys, "--video", str(ramp_video), "   ")


def test_options_without_a_question_are_refused_before_loading(no_model, ramp_video, capsys):
    assert "--options needs a question" in chat_error(capsys, "--video", str(ramp_video), "--options", "a|b")


def test_a_run_that_is_not_there_is_one_line(ramp_video, tmp_path, capsys):
    message = chat_error(capsys, "--video", str(ramp_video), "--ckpt", str(tmp_path / "no_run"), "What?")
    assert "no_run" in message


def test_load_4bit_on_the_cpu_is_one_line_before_any_loading(monkeypatch, ramp_video, tmp_path, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the 4-bit request was checked")

    monkeypatch.setattr(loader, "build_model", refuse)
    # The run does not exist either: the 4-bit check comes first, before the run is even looked up.
    argv = ["--video", str(ramp_video), "--ckpt", str(tmp_path / "no_run"), "--load-4bit", "--device", "cpu", "What?"]
    assert "a 4-bit (nf4) LLM runs only on a CUDA GPU" in chat_error(capsys, *argv)


def test_the_demo_without_gradio_says_which_extra_to_install(monkeypatch):
    from videochat2 import demo

    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed: importing it raises ImportError
    monkeypatch.setattr(demo, "load_model", lambda *a, **k: pytest.fail("loaded a model without Gradio"))
    with pytest.raises(SystemExit) as stopped:
        demo.main(["--ckpt", "some_run"])
    assert str(stopped.value.code) == "error: the demo needs Gradio: pip install -e '.[demo]'"


def test_export_refuses_an_absolute_llm_name_before_loading(no_model, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        export_module.main([str(tmp_path / "run"), str(tmp_path / "out"), "--llm-name", "/data/vicuna-7b"])
    assert str(stopped.value.code) == (
        "error: --llm-name /data/vicuna-7b is absolute: give a Hub id or a path relative to the export"
    )


def test_re_export_into_a_used_directory_refuses_unless_overwrite(no_model, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as stopped:
        export_module.main([str(tmp_path / "run"), str(out)])
    assert "not empty" in str(stopped.value.code) and "--overwrite" in str(stopped.value.code)
    with pytest.raises(AssertionError, match="model was loaded"):  # with --overwrite it goes on to load
        export_module.export(tmp_path / "run", out, overwrite=True)
    assert not out.exists()


def test_the_trust_hint_names_the_keys_users_type(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "x.pth"
    torch.save({"w": torch.ones(1), "p": Payload()}, path)
    with pytest.raises(CheckpointError) as refused:
        read_state_dict(path)
    assert "model.trust_checkpoint=true" in str(refused.value) and "--trust-checkpoint" in str(refused.value)


def test_a_sweep_directory_outside_the_run_gives_a_one_line_error_in_auto(tmp_path):
    """`hydra.sweep.dir` elsewhere: the job has no sub-directory of the run, so auto chains the plain stages."""
    layout = RunLayout(tmp_path / "outputs", "r")
    job = StageDir(tmp_path / "elsewhere" / "0", 2, layout)
    assert job.job is None
    with pytest.raises(RunLayoutError, match="stage 2 starts from stage 1 of run 'r'") as missing:
        init_chain("auto", job)
    assert "\n" not in str(missing.value)
    first = layout.stage(1)
    first.checkpoint_dir.mkdir(parents=True)
    first.last_checkpoint.write_bytes(b"weights")
    assert init_chain("auto", job) == [first.last_checkpoint]
    assert Path(first.last_checkpoint).is_file()


@pytest.mark.parametrize("override", ["data.num_frames=0", "data.image_size=-1", "eval.batch_size=0"])
def test_an_invalid_evaluation_value_is_one_line_naming_the_key(tmp_path, override):
    """Finding 10: num_frames=0 was blamed on a media file."""
    from recipes.evaluate import evaluate
    from tests.unit.test_configs import compose_train

    cfg = compose_train([f"paths.output_root={tmp_path}", override], config_name="eval")
    with pytest.raises(ValueError) as invalid:
        evaluate(cfg)
    assert str(invalid.value).startswith(override.split("=")[0]) and "\n" not in str(invalid.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # starts fresh interpreters importing torch
@pytest.mark.parametrize(
    ("script", "override", "message"),
    [
        ("train.py", "model.num_query=0", "train.py: error: model.num_query=0: must be at least 1"),
        ("eval.py", "eval.batch_size=0", "eval.py: error: eval.batch_size=0: must be a whole number of at least 1"),
    ],
)
def test_train_and_eval_end_a_user_mistake_with_its_message_alone(script, override, message, tmp_path):
    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, script, override, f"paths.output_root={tmp_path}", f"paths.data_dir={tmp_path}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]
