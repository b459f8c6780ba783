"""Chat with a trained VideoChat2 about a video or an image.

    videochat2-chat --ckpt outputs/demo --video clip.mp4 "What happens first?"
    videochat2-chat --ckpt outputs/demo --video clip.mp4 "What moves?" --options "a circle|a square|nothing"
    videochat2-chat --ckpt export_dir --image photo.jpg          # no question: a multi-turn prompt

`--ckpt` is a run directory (its latest stage 2/3), an export directory or an official stage-2/3 file. The
prompt is the conversation template the model was trained with; earlier turns stay in the prompt. With
`--options` the answer is the option whose letter scores highest after the MVBench prompt's `Best option:(`
(the fast evaluation protocol), printed as `(B) text`. `--device auto` (the default) answers on the GPU when
there is one, at the original's precision (`videochat2.device`). Frames, pixels and normalisation default to the
run's training settings (official files: the official evaluation's 16 frames, 224 px, CLIP statistics).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from videochat2.builder import LoadedModel
from videochat2.checkpoints import CheckpointError
from videochat2.data.conversation import build_conversation, leading_special_ids
from videochat2.data.transforms import FrameTransform
from videochat2.data.video import FrameSampling, MediaReadError, read_media
from videochat2.device import PRECISIONS, move_batch
from videochat2.eval.mvbench.answerers import letter_token_ids
from videochat2.loader import load_model
from videochat2.prompts import PROMPT_FAMILIES, build_prompt, option_letter
from videochat2.spec import MediaConfig

# Stands for the answer still to come: the prompt is the rendered conversation cut where it begins.
ANSWER_SLOT = "\x00"
EXIT_WORDS = ("exit", "quit", ":q")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class UsageError(ValueError):
    """A mistake in the command line, found before the model is loaded."""


@dataclass
class ChatSession:
    """One media item and the turns so far; `ask` generates free text, `choose` picks an option."""

    loaded: LoadedModel
    pixel_values: torch.Tensor
    media_type: str = "video"
    generation: dict = field(default_factory=dict)
    history: list[dict[str, str]] = field(default_factory=list)

    @property
    def stop(self) -> str | None:
        family = PROMPT_FAMILIES.get(self.loaded.template)
        return family.stop if family is not None else None

    def encode(self, before: str, after: str, instruction: str) -> dict:
        tokenizer = self.loaded.llm_tokenizer
        bos = leading_special_ids(tokenizer)
        inputs = {
            "pixel_values": self.pixel_values,
            "input_ids_before": [torch.tensor(bos + tokenizer(before, add_special_tokens=False)["input_ids"])],
            "input_ids_after": [torch.tensor(tokenizer(after, add_special_tokens=False)["input_ids"])],
        }
        if self.loaded.model.config.qformer_text_input:
            text = self.loaded.qformer_tokenizer([instruction], truncation=True, max_length=512, return_tensors="pt")
            inputs["instruction_ids"], inputs["instruction_mask"] = text["input_ids"], text["attention_mask"]
        return move_batch(inputs, self.loaded.device)

    def prompt(self, question: str) -> tuple[str, str, str]:
        """Text before and after the visual tokens, and the Q-Former instruction, for the next answer."""
        turns = [*self.history, {"q": question, "a": ANSWER_SLOT}]
        conversation = build_conversation(
            {"QA": turns}, self.loaded.template, self.media_type, tokenizer=self.loaded.llm_tokenizer
        )
        text = conversation.text[: conversation.text.index(ANSWER_SLOT)].rstrip(" ")
        before, after = text.split(conversation.placeholder)
        return before, after, conversation.instruction

    @torch.no_grad()
    def ask(self, question: str) -> str:
        """Generate an answer, cut at the template's end-of-turn text; the turn joins the history."""
        tokenizer = self.loaded.llm_tokenizer
        settings = {"max_new_tokens": 100, "num_beams": 1, **self.generation}
        if self.stop is not None:
            settings.update(stop_strings=[self.stop], tokenizer=tokenizer)
        with self.loaded.autocast():
            tokens = self.loaded.model.generate(**self.encode(*self.prompt(question)), **settings)[0].tolist()
        if tokenizer.eos_token_id in tokens:
            tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
        answer = cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), self.stop)
        self.history.append({"q": question, "a": answer})
        return answer

    @torch.no_grad()
    def choose(self, question: str, options: Sequence[str]) -> str:
        """`(letter) option` of the highest-scoring option letter after the MVBench prompt."""
        if self.loaded.template not in PROMPT_FAMILIES:
            raise ValueError(f"--options needs an MVBench prompt family; template {self.loaded.template!r} has none")
        prompt = build_prompt(question, options, self.loaded.template)
        before, after = prompt.segments
        letters = letter_token_ids(self.loaded.llm_tokenizer, len(options))
        with self.loaded.autocast():
            scores = self.loaded.model.score_options(letters, **self.encode(before, after, prompt.qformer_instruction))
        best = int(scores[0].argmax())
        return f"({option_letter(best)}) {options[best]}"


def cut_at_stop(text: str, stop: str | None) -> str:
    """Text before the end-of-turn string, also when the token limit cut that string short (`... #`)."""
    if stop is None:
        return text.strip()
    text = text.split(stop)[0].rstrip()
    partial = next((n for n in range(len(stop) - 1, 0, -1) if text.endswith(stop[:n])), 0)
    return text[: len(text) - partial].strip()


def read_pixels(path: str | Path, media_type: str, media: MediaConfig, sample: str) -> torch.Tensor:
    """[1, T, 3, size, size] frames of a video (or a one-frame image), as the model was trained to see them."""
    frames = read_media(path, media_type, FrameSampling(media.num_frames, sample))
    return FrameTransform(media.image_size, media.transform, media.normalization)(frames).unsqueeze(0)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="videochat2-chat", description=__doc__.split("\n")[0])
    parser.add_argument("question", nargs="?", help="ask once and exit; without it, a multi-turn prompt opens")
    parser.add_argument("--ckpt", required=True, help="run directory, export directory or official stage-2/3 file")
    media = parser.add_mutually_exclusive_group(required=True)
    media.add_argument("--video", help="a video file (mp4, webm, gif, ...) or a folder of JPEG frames")
    media.add_argument("--image", help="an image file")
    parser.add_argument("--options", help="answer choices separated by '|': prints the best one as '(B) text'")
    parser.add_argument("--num-frames", type=int, help="frames sampled from the video (default: as trained)")
    parser.add_argument("--image-size", type=int, help="pixels per side (default: as trained)")
    parser.add_argument("--normalization", choices=("imagenet", "clip"), help="default: as trained")
    parser.add_argument("--sample", default="middle", help="frame sampling: middle | rand | fps<X> (default middle)")
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--pretrained", default="data/pretrained", help="BERT and LLM directories for official files")
    parser.add_argument("--trust-checkpoint", action="store_true", help="read pickles with arbitrary objects")
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one) | cpu | cuda | cuda:N")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto: the original's (fp16 visual)")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="let the LLM directory's own Python code run (never implied)"
    )
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Everything about the command line that can be wrong, checked before minutes of model loading."""
    if args.question is not None and not args.question.strip():
        raise UsageError("the question is empty: ask something, or leave it out for a multi-turn prompt")
    if args.options is not None and args.question is None:
        raise UsageError("--options needs a question")
    media = Path(args.image or args.video)
    if not media.exists():
        raise UsageError(f"{media}: no such {'image' if args.image else 'video'} file")
    if args.video and media.suffix.lower() in IMAGE_SUFFIXES:
        raise UsageError(f"{media} is an image: pass it with --image")
    if args.image and media.is_dir():
        raise UsageError(f"{media} is a folder: pass a folder of frames with --video")


def media_settings(args: argparse.Namespace, trained: MediaConfig) -> MediaConfig:
    overrides = {"num_frames": args.num_frames, "image_size": args.image_size, "normalization": args.normalization}
    return replace(trained, **{k: v for k, v in overrides.items() if v is not None})


def session_from_args(args: argparse.Namespace) -> ChatSession:
    loaded = load_model(
        args.ckpt,
        pretrained_root=args.pretrained,
        trust_checkpoint=args.trust_checkpoint,
        device=args.device,
        precision=args.precision,
        trust_remote_code=args.trust_remote_code,
    )
    media_type = "image" if args.image else ("frame" if Path(args.video).is_dir() else "video")
    pixels = read_pixels(args.image or args.video, media_type, media_settings(args, loaded.spec.media), args.sample)
    generation = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample}
    if args.do_sample:
        generation.update(temperature=args.temperature, top_p=args.top_p)
    return ChatSession(loaded, pixels, "image" if media_type == "image" else "video", generation)


def interactive(session: ChatSession, read=input, write=print) -> None:
    """Question, answer, repeat; an empty line, `exit` or end of input stops."""
    write(f"chatting about the {session.media_type}; an empty line or 'exit' ends")
    while True:
        try:
            question = read(">>> ").strip()
        except EOFError:
            return
        if not question or question.lower() in EXIT_WORDS:
            return
        write(session.ask(question))


def main(argv: Sequence[str] | None = None) -> int:
    """Exit with one line, not a traceback, for anything the user can fix (paths, checkpoints, media)."""
    args = parse_args(argv)
    try:
        check_args(args)
        return run(args)
    except (ValueError, OSError, MediaReadError, CheckpointError) as err:
        sys.exit(f"error: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}")


def run(args: argparse.Namespace) -> int:
    session = session_from_args(args)
    if args.options:
        print(session.choose(args.question, [o.strip() for o in args.options.split("|")]))
    elif args.question:
        print(session.ask(args.question))
    else:
        interactive(session)
    return 0


if __name__ == "__main__":
    sys.exit(main())
