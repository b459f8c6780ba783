"""Homogeneous media-type batches in a seeded order, the original MetaLoader's semantics.

Every step is a batch of one media type (the vision encoder sees either clips or images), and the
sequence of media types is drawn from a seed shared by all ranks, so every rank takes the same type
at the same step without a broadcast. Mixing is proportional to dataset size, as in the original.
Each rank reads a disjoint shard of every media type.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class MediaTypeBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        media_types: Sequence[str],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.groups: dict[str, list[int]] = {}
        for index, media_type in enumerate(media_types):
            self.groups.setdefault(media_type, []).append(index)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches_of(self, indices: list[int], rng: random.Random) -> list[list[int]]:
        indices = list(indices)
        if self.shuffle:
            rng.shuffle(indices)
        per_step = self.batch_size * self.world_size
        usable = len(indices) // per_step * per_step if self.drop_last else len(indices)
        shard = indices[:usable][self.rank :: self.world_size]
        return [shard[i : i + self.batch_size] for i in range(0, len(shard), self.batch_size)]

    def _plan(self) -> list[list[int]]:
        rng = random.Random(f"{self.seed}-{self.epoch}")
        per_type = {t: self._batches_of(idx, rng) for t, idx in sorted(self.groups.items())}
        order = [t for t, batches in per_type.items() for _ in batches]
        if self.shuffle:
            rng.shuffle(order)
        cursors = dict.fromkeys(per_type, 0)
        plan = []
        for media_type in order:
            plan.append(per_type[media_type][cursors[media_type]])
            cursors[media_type] += 1
        return plan

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._plan())

    def __len__(self) -> int:
        return len(self._plan())
