"""Homogeneous media-type batches in a seeded order, the original MetaLoader's semantics, resumable.

Every step is a batch of one media type (the vision encoder sees either clips or images), and the
sequence of media types is drawn from a seed shared by all ranks, so every rank takes the same type at
the same step without a broadcast. Each rank reads a disjoint shard of every corpus.

An epoch draws from each corpus a quota of samples: its own size when no weights are given (the
original's mixing, proportional to size: every sample once), else its weight's share of the total
(a corpus is subsampled, or repeated in fresh shuffles, to fill its quota). The epoch keeps the length
of the data, so step counts and schedules do not depend on the weights.

The sampler's state (epoch, batches consumed) is all that is needed to continue an epoch where it
stopped: the plan of an epoch is a pure function of (seed, epoch, rank).
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
        corpus_ids: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        """`corpus_ids[i]` numbers the corpus of sample i (default: one corpus per media type);
        `weights[c]` is corpus c's share of the mix (default: proportional to size)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if corpus_ids is None:
            names = sorted(set(media_types))
            corpus_ids = [names.index(t) for t in media_types]
        if len(corpus_ids) != len(media_types):
            raise ValueError(f"{len(corpus_ids)} corpus ids for {len(media_types)} samples")
        self.corpora: list[list[int]] = [[] for _ in range(max(corpus_ids, default=-1) + 1)]
        for index, corpus in enumerate(corpus_ids):
            self.corpora[corpus].append(index)
        self.corpus_type = [media_types[indices[0]] if indices else "" for indices in self.corpora]
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.quotas = self._quotas(weights)
        self.epoch = 0
        self.position = 0
        self._start = 0

    @property
    def sampler(self) -> MediaTypeBatchSampler:
        """Lightning sets the epoch through `batch_sampler.sampler.set_epoch`; this one draws its own indices."""
        return self

    def _quotas(self, weights: Sequence[float] | None) -> list[int]:
        """Samples per rank and epoch from each corpus; equal on every rank by construction."""
        shard_sizes = [len(indices) // self.world_size for indices in self.corpora]
        if weights is None:
            return shard_sizes
        if len(weights) != len(self.corpora) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"need one non-negative weight per corpus ({len(self.corpora)}), got {list(weights)}")
        for corpus, (size, weight) in enumerate(zip(shard_sizes, weights)):
            if weight > 0 and size == 0:
                raise ValueError(f"corpus {corpus} has weight {weight} but fewer samples than ranks")
        total = sum(shard_sizes)
        return [round(total * w / sum(weights)) for w in weights]

    def drawn_shares(self) -> list[float]:
        """Each corpus's share of the samples an epoch actually trains on.

        Batches hold one media type and a last partial batch is dropped, so a media type with fewer samples
        per rank than one batch is never drawn, whatever its corpora's weights or sizes say.
        """
        pools: dict[str, int] = {}
        for corpus, quota in enumerate(self.quotas):
            pools[self.corpus_type[corpus]] = pools.get(self.corpus_type[corpus], 0) + quota
        used = {t: (n // self.batch_size * self.batch_size if self.drop_last else n) for t, n in pools.items()}
        drawn = [
            used[self.corpus_type[c]] * q / pools[self.corpus_type[c]] if q else 0.0 for c, q in enumerate(self.quotas)
        ]
        total = sum(drawn)
        return [d / total if total else 0.0 for d in drawn]

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._start = 0

    def _draw(self, shard: list[int], quota: int, rng: random.Random) -> list[int]:
        drawn: list[int] = []
        while len(drawn) < quota:
            batch = list(shard)
            if self.shuffle and drawn:
                rng.shuffle(batch)
            drawn.extend(batch)
        return drawn[:quota]

    def _batches_of(self, pool: list[int], rng: random.Random) -> list[list[int]]:
        if self.shuffle:
            rng.shuffle(pool)
        usable = len(pool) // self.batch_size * self.batch_size if self.drop_last else len(pool)
        return [pool[i : i + self.batch_size] for i in range(0, usable, self.batch_size)]

    def _plan(self) -> list[list[int]]:
        shared = random.Random(f"{self.seed}-{self.epoch}")
        own = random.Random(f"{self.seed}-{self.epoch}-{self.rank}")
        pools: dict[str, list[int]] = {}
        for corpus, indices in enumerate(self.corpora):
            indices = list(indices)
            if self.shuffle:
                shared.shuffle(indices)
            per_rank = len(indices) // self.world_size
            shard = indices[: per_rank * self.world_size][self.rank :: self.world_size]
            pools.setdefault(self.corpus_type[corpus], []).extend(self._draw(shard, self.quotas[corpus], own))
        per_type = {t: self._batches_of(pool, own) for t, pool in sorted(pools.items())}
        order = [t for t, batches in per_type.items() for _ in batches]
        if self.shuffle:
            shared.shuffle(order)
        cursors = dict.fromkeys(per_type, 0)
        plan = []
        for media_type in order:
            plan.append(per_type[media_type][cursors[media_type]])
            cursors[media_type] += 1
        return plan

    def __iter__(self) -> Iterator[list[int]]:
        plan = self._plan()
        start, self._start = self._start, 0
        self.position = start
        for batch in plan[start:]:
            self.position += 1
            yield batch

    def __len__(self) -> int:
        """Batches in a whole epoch (also while a resumed epoch yields only its remainder)."""
        per_type: dict[str, int] = {}
        for corpus, quota in enumerate(self.quotas):
            per_type[self.corpus_type[corpus]] = per_type.get(self.corpus_type[corpus], 0) + quota
        round_up = 0 if self.drop_last else self.batch_size - 1
        return sum((n + round_up) // self.batch_size for n in per_type.values())

    def state_dict(self) -> dict:
        """Where the epoch stands: `position` batches of epoch `epoch` are done."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "quotas": list(self.quotas),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`; refuses one taken under another seed, batch size, world size or data mix."""
        for key in ("seed", "batch_size", "world_size", "quotas"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume the data order: {key} was {state[key]!r} when saved, now {getattr(self, key)!r}"
                )
        self.epoch = state["epoch"]
        self.position = self._start = state["position"]
