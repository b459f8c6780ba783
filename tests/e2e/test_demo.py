"""The Gradio demo (`[demo]` extra): its handlers on the small trained run, and the app through Gradio's client."""

from __future__ import annotations

import json
import socket

import pytest

from videochat2.demo import build_demo, reply, watch
from videochat2.loader import load_model

pytestmark = pytest.mark.slow
gr = pytest.importorskip("gradio", reason="the demo is an optional extra: pip install -e '.[demo]'")


@pytest.fixture(scope="module")
def loaded(chained_run):
    return load_model(chained_run, device="cpu")


@pytest.fixture(scope="module")
def question(dirs) -> dict:
    data = dirs["data"] / "synthetic"
    item = json.loads((data / "annotations" / "instruction_video_mc.json").read_text())[0]
    return {"video": data / "videos" / item["video"], "text": item["question"], "options": item["candidates"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_uploading_shows_the_sampled_frames_and_starts_a_conversation(loaded, question):
    session, frames, status, chat = watch(loaded, {"max_new_tokens": 4}, str(question["video"]))
    assert len(frames) == loaded.spec.media.num_frames and frames[0].ndim == 3 and frames[0].dtype.name == "uint8"
    assert status.startswith(f"{len(frames)} frames of ") and chat == []
    history, box = reply(session, question["text"], " | ".join(question["options"]), [])
    assert box == "" and history[0] == {"role": "user", "content": question["text"]}
    assert any(history[1]["content"] == f"({letter}) {o}" for letter, o in zip("ABC", question["options"]))
    history, _ = reply(session, "And then?", "", history)
    assert len(history) == 4 and [t["q"] for t in session.history] == ["And then?"]


def test_a_bad_upload_or_no_upload_is_a_message_not_a_crash(loaded, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    session, frames, status, _ = watch(loaded, {}, str(broken))
    assert session is None and frames == [] and status.startswith("cannot read broken.mp4: ")
    history, _ = reply(None, "What moves?", "", [])
    assert history[-1]["content"] == "Upload a video or an image first."


def test_the_app_answers_through_gradios_client(loaded, question):
    from gradio_client import Client, handle_file

    demo = build_demo(loaded, {"max_new_tokens": 4})
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
    try:
        client = Client(url, verbose=False)
        frames, status, _ = client.predict(handle_file(str(question["video"])), api_name="/watch")
        assert len(frames) == loaded.spec.media.num_frames and "frames of" in status
        history, _ = client.predict(question["text"], "|".join(question["options"]), [], api_name="/reply")
        # The client hands messages back in Gradio's own form: content as a list of typed parts.
        assert history[-1]["role"] == "assistant"
        answer = "".join(part["text"] for part in history[-1]["content"])
        assert answer in {f"({letter}) {o}" for letter, o in zip("ABC", question["options"])}
    finally:
        demo.close()
