"""Media samples (frames + their annotation record), with unreadable media replaced and reported.

A sample whose media cannot be read (missing, empty, truncated, corrupt, or a reader that does not
return within `read_timeout_s`) is replaced by another sample of the same media type (batches stay
homogeneous) and the failure travels with the batch (`skipped`, one `path: reason` line each), so the
run can count, list and limit it instead of losing it silently or crashing a worker.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from videochat2.data.formats import MediaRecord
from videochat2.data.transforms import FrameTransform
from videochat2.data.video import FrameSampling, MediaReadError, read_media

Reader = Callable[..., torch.Tensor]


def read_with_deadline(read: Callable[[], torch.Tensor], timeout_s: float | None, path: str) -> torch.Tensor:
    """Run `read` in a daemon thread and give up after `timeout_s` seconds.

    A thread, not a signal, so it works in any thread of any DataLoader worker. A reader that hangs
    is abandoned (it cannot be killed from Python) and the sample is skipped; a hang inside C code
    that holds the GIL cannot be cut off this way, only by the DataLoader's own `timeout`.
    """
    if not timeout_s:
        return read()
    result: dict = {}

    def target() -> None:
        try:
            result["frames"] = read()
        except BaseException as err:  # handed to the caller's thread below
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True, name=f"read {path}")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise MediaReadError(f"{path}: read timed out after {timeout_s:g} s")
    if "error" in result:
        raise result["error"]
    return result["frames"]


class MediaDataset(Dataset):
    def __init__(
        self,
        records: Sequence[MediaRecord],
        sampling: FrameSampling,
        transform: FrameTransform,
        max_retries: int = 10,
        read_timeout_s: float | None = None,
        read: Reader = read_media,
        frame_times: bool = False,
    ) -> None:
        self.records = list(records)
        self.sampling = sampling
        self.transform = transform
        self.max_retries = max_retries
        self.read_timeout_s = read_timeout_s
        self.read = read
        # When set, each sample carries `seconds` (the frames' times) for the original's time message.
        self.frame_times = frame_times
        self._by_type: dict[str, list[int]] = {}
        for index, record in enumerate(self.records):
            self._by_type.setdefault(record.media_type, []).append(index)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def media_types(self) -> list[str]:
        return [r.media_type for r in self.records]

    def _frames(self, record: MediaRecord, rng: random.Random, times: list[float] | None) -> torch.Tensor:
        bound = (record.start, record.end) if record.start is not None else None
        extra = {"times": times} if times is not None else {}
        return read_with_deadline(
            lambda: self.read(record.path, record.media_type, self.sampling, rng, bound, record.reader, **extra),
            self.read_timeout_s,
            record.path,
        )

    def __getitem__(self, index: int) -> dict:
        rng = random.Random(random.getrandbits(64))
        skipped: list[str] = []
        for _ in range(self.max_retries):
            record = self.records[index]
            times: list[float] | None = [] if self.frame_times else None
            try:
                frames = self._frames(record, rng, times)
            except MediaReadError as err:
                skipped.append(str(err))
            except Exception as err:  # any other reader failure is still one bad file, not a dead worker
                skipped.append(f"{record.path}: {type(err).__name__}: {err}".splitlines()[0])
            else:
                return {
                    "pixel_values": self.transform(frames, rng),
                    "record": record,
                    "idx": index,
                    "media_type": record.media_type,
                    "skipped": skipped,
                    "seconds": times,
                }
            index = rng.choice(self._by_type[record.media_type])
        raise MediaReadError(f"{self.max_retries} unreadable samples in a row; last: {skipped[-1]}")
