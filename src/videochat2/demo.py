"""A web demo on top of `ChatSession`: upload a video or an image, see the frames the model samples, ask.

    pip install -e '.[demo]'
    python -m videochat2.demo --ckpt outputs/default            # then open http://127.0.0.1:7860

Questions get free-text answers; with options (`a circle | a square | nothing`) the answer is the option
whose letter scores highest, as `videochat2-chat --options`. Each browser tab has its own conversation
(`gr.State`) over one shared model. The server listens on this machine only unless `--host` says otherwise;
no share link is offered, since nothing here reaches the network.

The handlers (`watch`, `reply`) are plain functions of the session, so they are tested without a browser.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from videochat2.builder import LoadedModel
from videochat2.chat import ChatSession, media_type_of
from videochat2.checkpoints import CheckpointError
from videochat2.data.video import FrameSampling, MediaReadError, read_media
from videochat2.loader import load_model

Message = dict[str, str]


def sampled_frames(session: ChatSession, path: str | Path) -> list[np.ndarray]:
    """The frames (uint8 [H, W, 3]) sampled from `path` as the model reads them, before resizing."""
    sampling = FrameSampling(session.loaded.spec.media.num_frames, session.sample)
    frames = read_media(path, media_type_of(path), sampling)
    return [frame.numpy() for frame in frames]


def watch(loaded: LoadedModel, generation: dict, path: str | None) -> tuple[ChatSession | None, list, str, list]:
    """A new conversation about the uploaded file: (session, frames shown, status line, empty chat)."""
    if not path:
        return None, [], "upload a video or an image", []
    session = ChatSession(loaded, generation=dict(generation))
    try:
        session.watch(path)
        frames = sampled_frames(session, path)
    except (MediaReadError, OSError, ValueError) as err:
        return None, [], f"cannot read {Path(path).name}: {str(err).splitlines()[0]}", []
    return session, frames, f"{len(frames)} frames of {Path(path).name}; ask away", []


def reply(
    session: ChatSession | None, question: str, options: str, history: list[Message]
) -> tuple[list[Message], str]:
    """The chat with the question and its answer added, and an empty question box."""
    question = question.strip()
    if not question:
        return history, ""
    if session is None:
        answer = "Upload a video or an image first."
    elif options.strip():
        answer = str(session.choose(question, [o.strip() for o in options.split("|") if o.strip()]))
    else:
        answer = session.ask(question)
    return [*history, {"role": "user", "content": question}, {"role": "assistant", "content": answer}], ""


def build_demo(loaded: LoadedModel, generation: dict | None = None):
    """The Gradio app: upload and frames on the left, the conversation on the right."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reports: nothing reaches the network
    import gradio as gr

    generation = generation or {}
    with gr.Blocks(title="VideoChat2") as demo:
        session = gr.State(None)
        with gr.Row():
            with gr.Column():
                media = gr.File(label="video or image", file_types=["video", "image"], type="filepath")
                status = gr.Markdown("upload a video or an image")
                frames = gr.Gallery(label="frames the model sees", columns=4, height="auto")
            with gr.Column():
                chat = gr.Chatbot(label="conversation")
                question = gr.Textbox(label="question", placeholder="What happens first?")
                options = gr.Textbox(label="options (optional, separated by |)", placeholder="a circle | a square")
                ask = gr.Button("Ask", variant="primary")
        media.change(
            lambda path: watch(loaded, generation, path), media, [session, frames, status, chat], api_name="watch"
        )
        inputs, outputs = [session, question, options, chat], [chat, question]
        ask.click(reply, inputs, outputs, api_name="reply")
        question.submit(reply, inputs, outputs, api_name=False)
    return demo


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m videochat2.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="run directory, export directory or official stage-2/3 file")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--load-4bit", action="store_true", help="load the base LLM in 4 bits (CUDA GPU only)")
    parser.add_argument("--pretrained", default="data/pretrained", help="BERT and LLM directories for official files")
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, default=7860)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Load the model, then serve until interrupted; a missing extra or a bad checkpoint is one line."""
    args = parse_args(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        sys.exit("error: the demo needs Gradio: pip install -e '.[demo]'")
    try:
        loaded = load_model(
            args.ckpt,
            pretrained_root=args.pretrained,
            device=args.device,
            precision=args.precision,
            quantization="nf4" if args.load_4bit else None,
        )
    except (ValueError, OSError, CheckpointError) as err:
        sys.exit(f"error: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}")
    demo = build_demo(loaded, {"max_new_tokens": args.max_new_tokens})
    demo.launch(server_name=args.host, server_port=args.port, share=False)


if __name__ == "__main__":
    main()
