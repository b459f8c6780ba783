"""(media, caption) samples for stages 1-2, with unreadable media replaced and reported.

A sample whose media cannot be read is replaced by another sample of the same media type (batches
stay homogeneous) and the failure travels with the batch (`skipped`), so the run can count and list
it instead of losing it silently or crashing a worker.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from videochat2.data.formats import MediaRecord
from videochat2.data.transforms import FrameTransform
from videochat2.data.video import FrameSampling, MediaReadError, read_media


class CaptionDataset(Dataset):
    def __init__(
        self,
        records: Sequence[MediaRecord],
        sampling: FrameSampling,
        transform: FrameTransform,
        max_retries: int = 10,
        backend: str = "decord",
    ) -> None:
        self.records = list(records)
        self.sampling = sampling
        self.transform = transform
        self.max_retries = max_retries
        self.backend = backend
        self._by_type: dict[str, list[int]] = {}
        for index, record in enumerate(self.records):
            self._by_type.setdefault(record.media_type, []).append(index)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def media_types(self) -> list[str]:
        return [r.media_type for r in self.records]

    def __getitem__(self, index: int) -> dict:
        rng = random.Random(random.getrandbits(64))
        skipped: list[str] = []
        for _ in range(self.max_retries):
            record = self.records[index]
            try:
                frames = read_media(record.path, record.media_type, self.sampling, rng, backend=self.backend)
            except MediaReadError as err:
                skipped.append(str(err))
                index = rng.choice(self._by_type[record.media_type])
                continue
            return {
                "pixel_values": self.transform(frames, rng),
                "caption": record.caption,
                "idx": index,
                "media_type": record.media_type,
                "skipped": skipped,
            }
        raise MediaReadError(f"{self.max_retries} unreadable samples in a row; last: {skipped[-1]}")


class CaptionCollator:
    """Stacks frames and tokenizes captions for the Q-Former (padded to `max_length`, as the original)."""

    def __init__(self, tokenizer, max_length: int = 32) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, samples: list[dict]) -> dict:
        text = self.tokenizer(
            [s["caption"] for s in samples],
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {
            "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "idx": torch.tensor([s["idx"] for s in samples]),
            "media_type": samples[0]["media_type"],
            "captions": [s["caption"] for s in samples],
            "skipped": [msg for s in samples for msg in s["skipped"]],
        }
