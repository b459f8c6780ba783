"""Media samples (frames + their annotation record), with unreadable media replaced and reported.

A sample whose media cannot be read is replaced by another sample of the same media type (batches
stay homogeneous) and the failure travels with the batch (`skipped`), so the run can count and list
it instead of losing it silently or crashing a worker.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from torch.utils.data import Dataset

from videochat2.data.formats import MediaRecord
from videochat2.data.transforms import FrameTransform
from videochat2.data.video import FrameSampling, MediaReadError, read_media


class MediaDataset(Dataset):
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
                bound = (record.start, record.end) if record.start is not None else None
                frames = read_media(record.path, record.media_type, self.sampling, rng, bound, self.backend)
            except MediaReadError as err:
                skipped.append(str(err))
                index = rng.choice(self._by_type[record.media_type])
                continue
            return {
                "pixel_values": self.transform(frames, rng),
                "record": record,
                "idx": index,
                "media_type": record.media_type,
                "skipped": skipped,
            }
        raise MediaReadError(f"{self.max_retries} unreadable samples in a row; last: {skipped[-1]}")
