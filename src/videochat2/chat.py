"""Chat with a trained VideoChat2 about a video or an image.

    videochat2-chat --ckpt outputs/demo --video clip.mp4 "What happens first?"
    videochat2-chat --ckpt outputs/demo --video clip.mp4 "What moves?" --options "a circle|a square|nothing"
    videochat2-chat --ckpt export_dir --image photo.jpg          # no question: a multi-turn prompt

`--ckpt` is a run directory (its latest stage 2/3), an export directory or an official stage-2/3 file. The
prompt is the conversation template the model was trained with; earlier turns stay in the prompt. With
`--options` the answer is the option whose letter scores highest after the MVBench prompt's `Best option:(`
(the fast evaluation protocol), printed as `(B) text`. `--load-4bit` loads the base LLM in 4 bits (nf4, a CUDA
GPU only). `--device auto` (the default) answers on the GPU when
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


Media = str | Path | torch.Tensor


@dataclass(frozen=True)
class Choice:
    """The option a multiple-choice answer picked, and the probability of each option's letter.

    `str(choice)` is the command line's `(B) text`; the fields are there so a notebook need not parse it.
    """

    index: int
    option: str
    probs: tuple[float, ...]

    @property
    def letter(self) -> str:
        return option_letter(self.index)

    def __str__(self) -> str:
        return f"({self.letter}) {self.option}"


@dataclass
class ChatSession:
    """A model, the media item being talked about and the turns so far.

        chat = ChatSession.from_pretrained("outputs/default", device="auto").watch("clip.mp4")
        chat.ask("What happens first?")                      # free text; the turn joins the history
        chat.choose("What moves?", ["a circle", "a square"])  # a Choice, printed as "(A) a circle"
        chat.answer_batch(["a.mp4", "b.mp4"], ["What moves?"] * 2)   # one answer per clip, batched

    Frames are read as the model was trained to see them (`loaded.spec.media`), sampled by `sample`.
    """

    loaded: LoadedModel
    pixel_values: torch.Tensor | None = None
    media_type: str = "video"
    generation: dict = field(default_factory=dict)
    history: list[dict[str, str]] = field(default_factory=list)
    sample: str = "middle"

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        *,
        device: str = "auto",
        precision: str = "auto",
        load_4bit: bool = False,
        pretrained_root: str | None = None,
        trust_checkpoint: bool = False,
        trust_remote_code: bool = False,
        **generation,
    ) -> ChatSession:
        """A session on the model `source` names (see `load_model`); `generation` goes to every `ask`."""
        loaded = load_model(
            source,
            pretrained_root=pretrained_root,
            device=device,
            precision=precision,
            trust_checkpoint=trust_checkpoint,
            trust_remote_code=trust_remote_code,
            quantization="nf4" if load_4bit else None,
        )
        return cls(loaded, generation=generation)

    @property
    def stop(self) -> str | None:
        family = PROMPT_FAMILIES.get(self.loaded.template)
        return family.stop if family is not None else None

    def clip(self, media: Media, media_type: str | None = None) -> tuple[torch.Tensor, str]:
        """Pixels [1, T, 3, H, W] of a file, a frame folder or frames already transformed, and the prompt's kind.

        A tensor is taken as it is ([T, 3, H, W] or [1, T, 3, H, W]); a one-frame tensor counts as an image.
        """
        if isinstance(media, torch.Tensor):
            pixels = media.unsqueeze(0) if media.dim() == 4 else media
            if pixels.dim() != 5 or pixels.shape[0] != 1 or pixels.shape[2] != 3:
                raise ValueError(f"frames must be [T, 3, H, W] or [1, T, 3, H, W], got {list(media.shape)}")
            return pixels, media_type or ("image" if pixels.shape[1] == 1 else "video")
        kind = media_type or media_type_of(media)
        pixels = read_pixels(media, kind, self.loaded.spec.media, self.sample)
        return pixels, "image" if kind == "image" else "video"

    def watch(self, media: Media, media_type: str | None = None) -> ChatSession:
        """Talk about `media` from now on (the history starts over); returns the session, for chaining."""
        self.pixel_values, self.media_type = self.clip(media, media_type)
        self.history = []
        return self

    def _pixels(self) -> torch.Tensor:
        if self.pixel_values is None:
            raise ValueError("no video or image yet: call watch(path) first")
        return self.pixel_values

    def encode(self, pixel_values: torch.Tensor, prompts: Sequence[tuple[str, str, str]]) -> dict:
        """Model inputs for a batch of clips and their (text before, text after, Q-Former instruction)."""
        tokenizer = self.loaded.llm_tokenizer
        bos = leading_special_ids(tokenizer)
        inputs = {
            "pixel_values": pixel_values,
            "input_ids_before": [
                torch.tensor(bos + tokenizer(b, add_special_tokens=False)["input_ids"]) for b, _, _ in prompts
            ],
            "input_ids_after": [
                torch.tensor(tokenizer(a, add_special_tokens=False)["input_ids"]) for _, a, _ in prompts
            ],
        }
        if self.loaded.model.config.qformer_text_input:
            text = self.loaded.qformer_tokenizer(
                [i for _, _, i in prompts], padding=True, truncation=True, max_length=512, return_tensors="pt"
            )
            inputs["instruction_ids"], inputs["instruction_mask"] = text["input_ids"], text["attention_mask"]
        return move_batch(inputs, self.loaded.device)

    def prompt(self, question: str) -> tuple[str, str, str]:
        """Text before and after the visual tokens, and the Q-Former instruction, for the next answer."""
        return self.conversation(question, self.history, self.media_type)

    def conversation(self, question: str, history: Sequence[dict], media_type: str) -> tuple[str, str, str]:
        """The conversation template's prompt for `question` after `history`, cut where the answer begins."""
        turns = [*history, {"q": question, "a": ANSWER_SLOT}]
        conversation = build_conversation(
            {"QA": turns}, self.loaded.template, media_type, tokenizer=self.loaded.llm_tokenizer
        )
        text = conversation.text[: conversation.text.index(ANSWER_SLOT)].rstrip(" ")
        before, after = text.split(conversation.placeholder)
        return before, after, conversation.instruction

    def choice_prompt(self, question: str, options: Sequence[str]) -> tuple[str, str, str]:
        """The MVBench prompt ending in `Best option:(`, whose next token is scored over the option letters."""
        if self.loaded.template not in PROMPT_FAMILIES:
            raise ValueError(f"--options needs an MVBench prompt family; template {self.loaded.template!r} has none")
        prompt = build_prompt(question, options, self.loaded.template)
        return (*prompt.segments, prompt.qformer_instruction)

    @torch.no_grad()
    def generate(self, inputs: dict) -> list[str]:
        """Each prompt's answer, cut at the end of sequence and at the template's end-of-turn text."""
        tokenizer = self.loaded.llm_tokenizer
        settings = {"max_new_tokens": 100, "num_beams": 1, **self.generation}
        if self.stop is not None:
            settings.update(stop_strings=[self.stop], tokenizer=tokenizer)
        with self.loaded.autocast():
            rows = self.loaded.model.generate(**inputs, **settings).tolist()
        answers = []
        for tokens in rows:
            if tokenizer.eos_token_id in tokens:
                tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
            answers.append(cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), self.stop))
        return answers

    @torch.no_grad()
    def pick(self, inputs: dict, options: Sequence[Sequence[str]]) -> list[Choice]:
        """Each prompt's option: the highest next-token logit among its option letters."""
        with self.loaded.autocast():
            logits = self.loaded.model.next_token_logits(**inputs)
        choices = []
        for row, row_options in zip(logits, options):
            probs = row[letter_token_ids(self.loaded.llm_tokenizer, len(row_options))].softmax(0)
            best = int(probs.argmax())
            choices.append(Choice(best, row_options[best], tuple(round(p, 6) for p in probs.tolist())))
        return choices

    def ask(self, question: str) -> str:
        """Generate an answer, cut at the template's end-of-turn text; the turn joins the history."""
        answer = self.generate(self.encode(self._pixels(), [self.prompt(question)]))[0]
        self.history.append({"q": question, "a": answer})
        return answer

    def choose(self, question: str, options: Sequence[str]) -> Choice:
        """The option whose letter scores highest after the MVBench prompt (the fast evaluation protocol)."""
        prompt = self.choice_prompt(question, options)
        return self.pick(self.encode(self._pixels(), [prompt]), [options])[0]

    def answer_batch(
        self,
        media: Sequence[Media],
        questions: Sequence[str],
        options: Sequence[Sequence[str]] | None = None,
        batch_size: int = 8,
    ) -> list[str] | list[Choice]:
        """One answer per (clip, question), `batch_size` at a time: free text, or a `Choice` with `options`.

        Each question is asked fresh (no history; the session's own clip and history are left alone).
        Prompts are left-padded, so an answer does not depend on the batch it came in; clips of one shape
        and kind share a batch (images and videos go in separate ones).
        """
        check_batch(media, questions, options, batch_size)
        clips = [self.clip(item) for item in media]
        answers: list = [None] * len(questions)
        for rows in batches(clips, batch_size):
            pixels, kind = torch.cat([clips[i][0] for i in rows]), clips[rows[0]][1]
            if options is None:
                prompts = [self.conversation(questions[i], [], kind) for i in rows]
                out = self.generate(self.encode(pixels, prompts))
            else:
                prompts = [self.choice_prompt(questions[i], options[i]) for i in rows]
                out = self.pick(self.encode(pixels, prompts), [options[i] for i in rows])
            for i, answer in zip(rows, out):
                answers[i] = answer
        return answers


def check_batch(
    media: Sequence[Media], questions: Sequence[str], options: Sequence[Sequence[str]] | None, batch_size: int
) -> None:
    """Lengths that do not line up would silently pair clips with the wrong questions."""
    if isinstance(questions, str):
        raise ValueError("questions must be a list of strings, one per clip")
    if len(media) != len(questions):
        raise ValueError(f"{len(media)} clips but {len(questions)} questions: give one question per clip")
    if options is not None and len(options) != len(questions):
        raise ValueError(f"{len(questions)} questions but {len(options)} option lists: give one list per question")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def batches(clips: Sequence[tuple[torch.Tensor, str]], batch_size: int) -> list[list[int]]:
    """Indices of `clips` in groups of one pixel shape and prompt kind, at most `batch_size` each."""
    groups: dict[tuple, list[int]] = {}
    for i, (pixels, kind) in enumerate(clips):
        groups.setdefault((kind, tuple(pixels.shape)), []).append(i)
    return [rows[s : s + batch_size] for rows in groups.values() for s in range(0, len(rows), batch_size)]


def media_type_of(path: str | Path) -> str:
    """`image` by the file's suffix, `frame` for a folder of frames, `video` otherwise."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    return "frame" if path.is_dir() else "video"


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
        "--load-4bit", action="store_true", help="load the base LLM in 4 bits (nf4, double quantised; CUDA GPU only)"
    )
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
        quantization="nf4" if args.load_4bit else None,
    )
    media_type = "image" if args.image else ("frame" if Path(args.video).is_dir() else "video")
    pixels = read_pixels(args.image or args.video, media_type, media_settings(args, loaded.spec.media), args.sample)
    generation = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample}
    if args.do_sample:
        generation.update(temperature=args.temperature, top_p=args.top_p)
    return ChatSession(loaded, pixels, "image" if media_type == "image" else "video", generation, sample=args.sample)


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
