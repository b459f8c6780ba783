"""MVBench questions -> model-ready batches: frames by the official index rule, cached, decoded in workers.

Decoding dominates a naive MVBench run, so each clip is decoded once and kept on disk as uint8 frames
after the spatial transform (what PIL hands the reference evaluator before normalisation). The cache key
holds everything that changes those pixels: the media path (task prefix + video: MVBench reuses file
names across folders), the file's size and modification time (a rebuilt dataset keeps its names), the
bound, the frame count, the image size, the spatial mode and the decoder. Never the file name alone.

A question whose media is missing or undecodable is not dropped: its item carries the error, so the
evaluation scores it wrong and counts it per task.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from videochat2.data.conversation import leading_special_ids
from videochat2.data.transforms import NORMALIZATION, FrameTransform
from videochat2.data.video import MVBENCH_SAMPLE, FrameSampling, MediaReadError, read_media
from videochat2.eval.mvbench.tasks import MVBenchQuestion
from videochat2.prompts import MVBenchPrompt, build_prompt


@dataclass(frozen=True)
class FrameSpec:
    """How a question's clip becomes pixels."""

    num_frames: int
    image_size: int
    mode: str = "test"
    normalization: str = "imagenet"
    backend: str = "decord"

    def transform(self) -> FrameTransform:
        return FrameTransform(self.image_size, self.mode, self.normalization)


def media_fingerprint(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) of a file or frame folder; raises MediaReadError when it is absent."""
    try:
        stat = path.stat()
    except OSError:
        raise MediaReadError(f"{path}: file not found") from None
    return stat.st_size, stat.st_mtime_ns


def cache_key(question: MVBenchQuestion, spec: FrameSpec) -> str:
    """A file name that changes whenever the cached pixels would."""
    size, mtime = media_fingerprint(question.video)
    prefix, video, start, end = question.cache_key
    parts = (
        str(question.video.resolve()),
        prefix,
        video,
        start,
        end,
        size,
        mtime,
        spec.num_frames,
        spec.image_size,
        spec.mode,
        spec.backend,
    )
    return hashlib.sha1(repr(parts).encode()).hexdigest()


def spatial_uint8(frames: torch.Tensor, spec: FrameSpec) -> torch.Tensor:
    """uint8 [T,H,W,3] -> uint8 [T,3,S,S] after the spatial transform only.

    FrameTransform fuses resizing and normalisation, so the normalisation is undone and the result
    rounded; the error before rounding is far below one grey level.
    """
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATION[spec.normalization])
    pixels = (spec.transform()(frames) * std + mean) * 255.0
    return pixels.round().clamp(0, 255).to(torch.uint8)


def normalize(frames: torch.Tensor, normalization: str) -> torch.Tensor:
    """uint8 [T,3,S,S] -> float, scaled to [0,1] then standardised, as the reference evaluator."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATION[normalization])
    return (frames.float() / 255.0 - mean) / std


class FrameCache:
    """uint8 clips in `.npy` files named by `cache_key`; writes are atomic, so workers can share it."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None

    def get(self, key: str) -> torch.Tensor | None:
        if self.directory is None:
            return None
        path = self.directory / f"{key}.npy"
        if not path.is_file():
            return None
        return torch.from_numpy(np.load(path, allow_pickle=False))

    def put(self, key: str, frames: torch.Tensor) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            np.save(file, frames.numpy(), allow_pickle=False)
        os.replace(tmp, self.directory / f"{key}.npy")


def read_question_frames(question: MVBenchQuestion, spec: FrameSpec) -> torch.Tensor:
    """Decode a question's clip with the official index rule (uint8 [T,H,W,3]).

    The readers assume the reference's rates for media without one (frame folders 3 fps, gifs 25).
    """
    sampling = FrameSampling(spec.num_frames, MVBENCH_SAMPLE)
    return read_media(question.video, question.media_type, sampling, bound=question.bound, backend=spec.backend)


class MVBenchDataset(Dataset):
    """Item i: question i's normalised frames [T,3,S,S] (zeros when `blind` or unreadable) and its error."""

    def __init__(
        self,
        questions: Sequence[MVBenchQuestion],
        spec: FrameSpec,
        cache: FrameCache | None = None,
        blind: bool = False,
    ) -> None:
        self.questions = list(questions)
        self.spec = spec
        self.cache = cache or FrameCache(None)
        self.blind = blind

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> dict:
        question = self.questions[index]
        error = None
        if self.blind:
            frames = self._zeros()
        else:
            try:
                frames = normalize(self._frames(question), self.spec.normalization)
            except MediaReadError as err:
                frames, error = self._zeros(), str(err)
        return {"index": index, "question": question, "pixel_values": frames, "error": error}

    def _zeros(self) -> torch.Tensor:
        return torch.zeros(self.spec.num_frames, 3, self.spec.image_size, self.spec.image_size)

    def _frames(self, question: MVBenchQuestion) -> torch.Tensor:
        key = cache_key(question, self.spec)
        frames = self.cache.get(key)
        if frames is None:
            frames = spatial_uint8(read_question_frames(question, self.spec), self.spec)
            self.cache.put(key, frames)
        return frames


class MVBenchCollator:
    """Items -> a batch with the prompt tokenized around the visual tokens (BOS before them only).

    Runs in the DataLoader workers. Each sample keeps its own token lists; the model pads on the left.
    With `answer_in_slot` > 0 the batch is the text-only oracle: the gold answer, written that many times,
    stands where the visual tokens would, and there are no pixels. It measures what the LLM answers
    given visual tokens that say exactly the answer, the ceiling of everything before it.
    """

    def __init__(
        self,
        llm_tokenizer: PreTrainedTokenizerBase,
        qformer_tokenizer: PreTrainedTokenizerBase | None,
        family: str,
        qformer_max_length: int = 256,
        answer_in_slot: int = 0,
    ) -> None:
        self.llm_tokenizer = llm_tokenizer
        self.qformer_tokenizer = qformer_tokenizer
        self.family = family
        self.qformer_max_length = qformer_max_length
        self.answer_in_slot = answer_in_slot

    def prompt(self, question: MVBenchQuestion) -> MVBenchPrompt:
        return build_prompt(question.question, question.candidates, self.family, question.context)

    def encode(self, prompt: MVBenchPrompt, slot: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids before the visual tokens, ids after them); with `slot`, all of it before, `slot` in the gap."""
        before, after = prompt.segments
        if slot is not None:
            before, after = before + slot + after, ""
        text_ids = self.llm_tokenizer(before, add_special_tokens=False)["input_ids"]
        ids_before = leading_special_ids(self.llm_tokenizer) + text_ids
        ids_after = self.llm_tokenizer(after, add_special_tokens=False)["input_ids"]
        return torch.tensor(ids_before, dtype=torch.long), torch.tensor(ids_after, dtype=torch.long)

    def slot(self, question: MVBenchQuestion) -> str | None:
        return " ".join([question.answer] * self.answer_in_slot) if self.answer_in_slot else None

    def __call__(self, items: list[dict]) -> dict:
        prompts = [self.prompt(item["question"]) for item in items]
        encoded = [self.encode(p, self.slot(item["question"])) for p, item in zip(prompts, items)]
        oracle = self.answer_in_slot > 0
        batch = {
            "indices": [item["index"] for item in items],
            "questions": [item["question"] for item in items],
            "errors": [item["error"] for item in items],
            "pixel_values": None if oracle else torch.stack([item["pixel_values"] for item in items]),
            "input_ids_before": [before for before, _ in encoded],
            "input_ids_after": [after for _, after in encoded],
        }
        if self.qformer_tokenizer is not None:
            text = self.qformer_tokenizer(
                [p.qformer_instruction for p in prompts],
                padding="longest",
                truncation=True,
                max_length=self.qformer_max_length,
                return_tensors="pt",
            )
            batch["instruction_ids"], batch["instruction_mask"] = text["input_ids"], text["attention_mask"]
        return batch
