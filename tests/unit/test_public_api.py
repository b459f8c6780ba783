"""The public names a notebook uses: `from videochat2 import load_model, ChatSession, read_media`."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_public_names_resolve_to_the_library_functions():
    import videochat2
    from videochat2.chat import ChatSession
    from videochat2.data.video import read_media
    from videochat2.loader import load_model

    assert (videochat2.load_model, videochat2.ChatSession, videochat2.read_media) == (
        load_model,
        ChatSession,
        read_media,
    )
    assert set(videochat2.__all__) >= {"load_model", "ChatSession", "read_media"}


def test_the_api_page_names_resolve_too():
    import videochat2
    from videochat2.chat import Choice
    from videochat2.hf import VideoChat2Config, VideoChat2ForConditionalGeneration

    assert (videochat2.Choice, videochat2.VideoChat2ForConditionalGeneration) == (
        Choice,
        VideoChat2ForConditionalGeneration,
    )
    assert videochat2.VideoChat2Config is VideoChat2Config and VideoChat2Config.model_type == "videochat2"


def test_an_unknown_name_is_an_attribute_error():
    import videochat2

    with pytest.raises(AttributeError, match="no attribute 'load_modle'"):
        videochat2.load_modle  # noqa: B018


def test_importing_the_package_loads_no_model_code():
    result = run_python("import sys, videochat2; print('videochat2.loader' in sys.modules, 'torch' in sys.modules)")
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.slow  # starts fresh interpreters importing torch
def test_loading_the_public_api_is_quiet():
    result = run_python("from videochat2 import load_model, ChatSession, read_media")
    assert result.returncode == 0
    assert result.stderr == ""
