"""Streaming shards: annotation records + media files <-> WebDataset-style tar shards.

    python -m videochat2.data.shards --annotation A --media-root R --media-type video --out DIR \\
        [--format videochat2_caption] [--shard-size 256MB]

A shard is a plain tar in the WebDataset layout: each sample is two members sharing a key,
`<key>.<ext>` (the media file's bytes, its own extension) and `<key>.json` (the parsed record:
caption or QA turns, clip bounds, reader, corpus, the original path), so a shard reads with
`webdataset` as well as here. The records are parsed once, by the same loaders as the file-based
path, so a shard sample is the file-based sample's record with its media read from bytes: the same
record gives the same frames. Media that cannot be read at conversion are skipped, counted and
listed in `<out>/skipped.txt`; `<out>/shards.json` lists the shards and their sample counts.

Reading (`ShardStream`) splits shards by rank and DataLoader worker: every shard read once per
epoch by exactly one (rank, worker), or, with `resampled=True`, every (rank, worker) draws shards
at random from its own seed forever and the epoch is cut at a fixed number of batches, the same on
every rank, which is what DDP needs (ranks never run out at different steps). Written with the
standard library's tarfile: it gives exact control over the split and the seeds, which the
equality and split tests pin down, and adds no dependency.
"""

from __future__ import annotations

import argparse
import functools
import io
import itertools
import json
import logging
import random
import re
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields
from pathlib import Path

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from videochat2.data.formats import MediaRecord, MultipleChoice
from videochat2.data.media_dataset import read_with_deadline
from videochat2.data.transforms import FrameTransform
from videochat2.data.video import FrameSampling, MediaReadError, read_media

log = logging.getLogger(__name__)

INDEX = "shards.json"
# Samples (still encoded) mixed across shard boundaries when shuffling, as WebDataset's shuffle buffer.
SHUFFLE_BUFFER = 64
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMG]?)B?", re.IGNORECASE)
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def parse_size(text: str | int) -> int:
    """`256MB`, `1.5GB`, `500K` or a byte count -> bytes (powers of 1000, as file sizes are shown)."""
    match = _SIZE.fullmatch(str(text).strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"shard size must look like 256MB, 1GB or a byte count, got {text!r}")
    return int(float(match.group(1)) * 1000 ** " KMG".index(match.group(2).upper() or " "))


def expand_shards(spec: str | Path) -> list[str]:
    """A shard directory (the shards its `shards.json` lists, else its `*.tar`, sorted) or a brace pattern
    `dir/part-{000000..000127}.tar`. The index wins over a glob: a stray tar in the directory (an older
    packing, a copy) is not training data."""
    spec = str(spec)
    match = _BRACE.search(spec)
    if match:
        lo, hi = match.groups()
        width = len(lo)
        return [
            name
            for i in range(int(lo), int(hi) + 1)
            for name in expand_shards(spec[: match.start()] + str(i).zfill(width) + spec[match.end() :])
        ]
    path = Path(spec)
    if path.is_dir() and (path / INDEX).is_file():
        return indexed_shards(path)
    if path.is_dir():
        shards = sorted(str(p) for p in path.glob("*.tar"))
        if not shards:
            raise FileNotFoundError(f"{path}: no .tar shards in this directory")
        return shards
    return [spec]


def indexed_shards(directory: Path) -> list[str]:
    """The shards `<directory>/shards.json` lists, each checked to exist."""
    try:
        names = list(json.loads((directory / INDEX).read_text())["shards"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{directory / INDEX}: not a shard index ({err})") from None
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory / INDEX} lists shards that are missing: {', '.join(missing[:5])}")
    return [str(directory / name) for name in names]


# ---------------------------------------------------------------- writing

# What a packing writes into its output directory (and what `overwrite` removes).
OUTPUTS = ("*.tar", INDEX, "skipped.txt")


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse (or, with `overwrite`, clear) a directory that already holds shards: old ones would be read too."""
    old = sorted({p for pattern in OUTPUTS for p in out.glob(pattern)}) if out.is_dir() else []
    if not old:
        return
    if not overwrite:
        raise FileExistsError(
            f"{out} already holds shards ({len(old)} files, e.g. {old[0].name}); choose an empty directory "
            "or pass --overwrite to replace them"
        )
    for path in old:
        path.unlink()


def record_to_json(record: MediaRecord) -> bytes:
    return json.dumps(asdict(record), ensure_ascii=False).encode()


def record_from_json(data: bytes) -> MediaRecord:
    item = json.loads(data)
    known = {f.name for f in fields(MediaRecord)}
    item = {k: v for k, v in item.items() if k in known}
    item["qa"] = tuple(item.get("qa") or ())
    if item.get("choice"):
        choice = item["choice"]
        item["choice"] = MultipleChoice(choice["question"], tuple(choice["candidates"]), choice["answer"])
    return MediaRecord(**item)


class ShardWriter:
    """Appends samples to `<prefix>-000000.tar`, ... and starts a new shard before one would pass `max_bytes`."""

    def __init__(self, out: Path, max_bytes: int, prefix: str = "shard") -> None:
        self.out, self.max_bytes, self.prefix = out, max_bytes, prefix
        self.counts: list[int] = []
        self._tar: tarfile.TarFile | None = None
        self._bytes = 0
        out.mkdir(parents=True, exist_ok=True)

    def add(self, key: str, members: dict[str, bytes]) -> None:
        size = sum(512 + len(data) + 511 for data in members.values())
        if self._tar is None or (self._bytes + size > self.max_bytes and self.counts[-1] > 0):
            self._open_next()
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            self._tar.addfile(info, io.BytesIO(data))
        self._bytes += size
        self.counts[-1] += 1

    def _open_next(self) -> None:
        self.close()
        self._tar = tarfile.open(self.out / f"{self.prefix}-{len(self.counts):06d}.tar", "w")
        self.counts.append(0)
        self._bytes = 0

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def names(self) -> list[str]:
        return [f"{self.prefix}-{i:06d}.tar" for i in range(len(self.counts))]


def write_shards(
    records: list[MediaRecord], out: str | Path, shard_size: str | int = "256MB", overwrite: bool = False
) -> dict:
    """Pack each record with its media bytes; unreadable media are skipped and listed, never lost silently."""
    out = Path(out)
    prepare_output(out, overwrite)
    writer = ShardWriter(out, parse_size(shard_size))
    skipped: list[str] = []
    for index, record in enumerate(records):
        media = Path(record.path)
        if not media.is_file() or media.stat().st_size == 0:
            skipped.append(f"{record.path}: {'empty file' if media.is_file() else 'not a file'}")
            continue
        ext = media.suffix.lstrip(".").lower() or "bin"
        writer.add(f"{index:09d}", {ext: media.read_bytes(), "json": record_to_json(record)})
    writer.close()
    summary = {
        "shards": dict(zip(writer.names(), writer.counts)),
        "samples": sum(writer.counts),
        "skipped": len(skipped),
    }
    (out / INDEX).write_text(json.dumps(summary, indent=1))
    (out / "skipped.txt").write_text("".join(line + "\n" for line in skipped))
    return summary


# ---------------------------------------------------------------- reading


# A sample that stands for a shard that could not be read (not a tar, truncated): skipped like bad media.
BAD_SHARD = "__bad_shard__"


def iter_shard_or_report(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """`iter_shard`, ending in one BAD_SHARD sample (naming the shard) where the file stops being a tar."""
    try:
        yield from iter_shard(path)
    except (tarfile.TarError, OSError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        yield "", {BAD_SHARD: f"unreadable shard {path}: {reason}".encode()}


def iter_shard(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) per sample, in tar order; members of one sample are adjacent."""
    key, members = None, {}
    with tarfile.open(path, "r|") as tar:
        for info in tar:
            if not info.isfile():
                continue
            name = Path(info.name).name
            sample_key, _, ext = name.partition(".")
            if sample_key != key and members:
                yield key, members
                members = {}
            key = sample_key
            members[ext] = tar.extractfile(info).read()
    if members:
        yield key, members


def split_for(shards: list[str], rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """The shards (rank, worker) reads once per epoch: disjoint across all of them, together complete."""
    stream, streams = rank * num_workers + worker, world_size * num_workers
    return shards[stream::streams]


class ShardStream(IterableDataset):
    """Batches (lists of samples, one media type each) streamed from shards.

    Samples are the dicts `MediaDataset` gives (`pixel_values`, `record`, `idx`, `media_type`,
    `skipped`), so the same collators batch them; `idx` numbers samples in the stream. Unreadable
    media (or reads longer than `read_timeout_s`) are skipped and reported with the next sample, like
    the file-based path.
    """

    def __init__(
        self,
        shards: list[str],
        sampling: FrameSampling,
        transform: FrameTransform,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        resampled: bool = False,
        epoch_batches: int | None = None,
        read: Callable = read_media,
        max_retries: int = 10,
        read_timeout_s: float | None = None,
        shuffle: bool = False,
        frame_times: bool = False,
    ) -> None:
        if resampled and not epoch_batches:
            raise ValueError("a resampled shard stream needs epoch_batches (it never ends on its own)")
        if not shards:
            raise ValueError("no shards to stream from")
        self.shards, self.sampling, self.transform = list(shards), sampling, transform
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.resampled, self.epoch_batches, self.read = resampled, epoch_batches, read
        # Each sample carries `seconds` (the frames' times) for the original's time message, as MediaDataset's.
        self.frame_times = frame_times
        self.max_retries, self.read_timeout_s, self.shuffle = max_retries, read_timeout_s, shuffle
        self.epoch = 0

    def __len__(self) -> int:
        if self.epoch_batches is None:
            raise TypeError("a shard stream read once per epoch has no length known in advance")
        return self.epoch_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[dict]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        epoch, self.epoch = self.epoch, self.epoch + 1  # persistent workers keep counting epochs
        stream = f"{self.seed}:{epoch}:{self.rank}:{worker}"
        rng = random.Random(stream)
        if self.resampled:
            names = (rng.choice(self.shards) for _ in itertools.count())
        else:
            order = list(self.shards)
            if self.shuffle:  # one order per epoch for all ranks, so the split stays a partition
                random.Random(f"{self.seed}:{epoch}").shuffle(order)
            names = iter(split_for(order, self.rank, self.world_size, worker, num_workers))
        raw = ((shard, key, members) for shard in names for key, members in iter_shard_or_report(shard))
        if self.shuffle:
            raw = _shuffled(raw, rng, SHUFFLE_BUFFER)
        batches = self._batches(self._samples(raw, stream))
        if self.epoch_batches is not None:
            share = self.epoch_batches // num_workers + (worker < self.epoch_batches % num_workers)
            batches = itertools.islice(batches, share)
        yield from batches

    def _samples(self, raw: Iterator[tuple[str, str, dict[str, bytes]]], stream: str) -> Iterator[dict]:
        skipped: list[str] = []
        for index, (shard, key, members) in enumerate(raw):
            rng = random.Random(f"{stream}:{index}")
            record = None
            times: list[float] | None = [] if self.frame_times else None
            extra = {"times": times} if times is not None else {}
            try:
                record, media = _unpack(members)
                # Bound now: a read abandoned at its deadline must not see the next sample's values.
                read = functools.partial(
                    self.read,
                    io.BytesIO(media),
                    record.media_type,
                    self.sampling,
                    rng,
                    _bound(record),
                    record.reader,
                    **extra,
                )
                frames = read_with_deadline(read, self.read_timeout_s, record.path)
            except Exception as err:  # one bad sample, reported, never a dead worker
                where = f"{record.path} ({Path(shard).name}/{key})" if record else f"{Path(shard).name}/{key}"
                skipped.append(f"{where}: {err}".splitlines()[0])
                if len(skipped) >= self.max_retries:
                    raise MediaReadError(f"{len(skipped)} unreadable samples in a row; last: {skipped[-1]}") from None
                continue
            yield {
                "pixel_values": self.transform(frames, rng),
                "record": record,
                "idx": index,
                "media_type": record.media_type,
                "skipped": skipped,
                "seconds": times,
            }
            skipped = []
        if skipped:  # no later sample to carry them into the run's count
            log.warning("%d unreadable samples at the end of a shard stream: %s", len(skipped), "; ".join(skipped))

    def _batches(self, samples: Iterator[dict]) -> Iterator[list[dict]]:
        """Full batches of one media type, in the order they fill up (a last partial one is dropped)."""
        buckets: dict[str, list[dict]] = {}
        for sample in samples:
            bucket = buckets.setdefault(sample["media_type"], [])
            bucket.append(sample)
            if len(bucket) == self.batch_size:
                yield bucket
                buckets[sample["media_type"]] = []
        skipped = [msg for bucket in buckets.values() for sample in bucket for msg in sample["skipped"]]
        if skipped:
            log.warning("%d unreadable samples before the dropped last batch: %s", len(skipped), "; ".join(skipped))


def stream_loader(
    shards: str,
    epoch_samples: int | None,
    dataset,
    collate: Callable,
    batch_size: int,
    num_workers: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """The training loader of `data.streaming`: the file-based `dataset`'s sampling and transform, shard input.

    With `epoch_samples` the streams are resampled and every rank takes `epoch_samples / (ranks x
    batch_size)` batches per epoch; without, each shard is read once per epoch, which leaves ranks
    with different batch counts, so more than one rank needs `epoch_samples`.
    """
    if epoch_samples is None and world_size > 1:
        raise ValueError(
            "data.streaming.epoch_samples is required with more than one rank "
            "(shards read once per epoch give the ranks different numbers of batches)"
        )
    epoch_batches = epoch_samples // (world_size * batch_size) if epoch_samples is not None else None
    if epoch_batches is not None and epoch_batches < 1:
        raise ValueError(f"data.streaming.epoch_samples={epoch_samples} is less than one batch per rank")
    names = expand_shards(shards)
    log.info(
        "training samples stream from %d shards (%s), %s; the corpora's media files are not read",
        len(names),
        shards,
        f"{epoch_batches} batches per rank and epoch, resampled" if epoch_batches else "each shard once per epoch",
    )
    stream = ShardStream(
        names,
        dataset.sampling,
        dataset.transform,
        batch_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
        resampled=epoch_batches is not None,
        epoch_batches=epoch_batches,
        read=dataset.read,
        read_timeout_s=dataset.read_timeout_s,
        shuffle=True,
        frame_times=getattr(dataset, "frame_times", False),
    )
    return DataLoader(
        stream, batch_size=None, num_workers=num_workers, collate_fn=collate, persistent_workers=num_workers > 0
    )


def _unpack(members: dict[str, bytes]) -> tuple[MediaRecord, bytes]:
    """A sample's record and media bytes; anything but one media file and one .json is a bad sample."""
    if BAD_SHARD in members:
        raise MediaReadError(members[BAD_SHARD].decode())
    media = [value for ext, value in members.items() if ext != "json"]
    if "json" not in members or len(media) != 1:
        raise MediaReadError(f"expected one media file and one .json, got {sorted(members)}")
    return record_from_json(members["json"]), media[0]


def _shuffled(items: Iterator, rng: random.Random, size: int) -> Iterator:
    """A streaming shuffle: keep `size` items, emit a random one as each new one arrives."""
    buffer = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        slot = rng.randrange(size)
        yield buffer[slot]
        buffer[slot] = item
    rng.shuffle(buffer)
    yield from buffer


def _bound(record: MediaRecord) -> tuple[float, float] | None:
    return (record.start, record.end) if record.start is not None else None


def main(argv: list[str] | None = None) -> None:
    from videochat2.data.formats import load_records

    parser = argparse.ArgumentParser(description="Pack an annotation file and its media into tar shards.")
    parser.add_argument("--annotation", required=True, help="annotation JSON / JSONL / Parquet file")
    parser.add_argument("--media-root", required=True, help="directory the annotation's media paths are relative to")
    parser.add_argument("--media-type", required=True, choices=["video", "image"])
    parser.add_argument(
        "--format", default="videochat2_caption", help="annotation format (see videochat2.data.formats)"
    )
    parser.add_argument("--reader", default="decord", help="video reader recorded with each sample (decord | pyav)")
    parser.add_argument("--corpus", default="", help="corpus name recorded with each sample")
    parser.add_argument("--out", required=True, help="output directory for the shards")
    parser.add_argument("--shard-size", default="256MB", help="target shard size, e.g. 256MB or 1GB")
    parser.add_argument("--overwrite", action="store_true", help="replace the shards already in --out")
    args = parser.parse_args(argv)
    records = load_records(
        args.annotation, args.media_root, args.media_type, format=args.format, reader=args.reader, corpus=args.corpus
    )
    try:
        summary = write_shards(records, args.out, args.shard_size, args.overwrite)
    except FileExistsError as err:
        sys.exit(f"error: {err}")
    print(
        f"{summary['samples']} samples in {len(summary['shards'])} shards under {args.out}; "
        f"{summary['skipped']} skipped (listed in skipped.txt)"
    )


if __name__ == "__main__":
    main()
