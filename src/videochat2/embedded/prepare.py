"""Prepare the embedded default once: build the world and pretrain the tiny LLM, however many processes ask.

Under torchrun or SLURM every rank runs the training recipe, and each asks for the embedded data before
the Trainer (and so any notion of rank 0) exists. Without coordination every rank would build the world
and pretrain the LLM at the same time, into the same directory. An exclusive lock (`fcntl.flock`) on a file
next to the root makes the first process do the work while the others wait; they then find it done, since
the build and the pretraining are no-ops when what is on disk matches their settings.

The lock is released when its holder exits, even when it is killed, so a crashed preparation leaves no stale
lock behind. The lock file stays: deleting it would let a waiting process and a newcomer lock two different
files. It sits next to the root, not in it, because a build replaces the root by renames. Across nodes the
lock holds where the shared file system supports flock (NFS does).
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from videochat2.embedded.build import build
from videochat2.embedded.llm import PretrainingSchedule, load_pretraining_text, pretrain_tiny_llama
from videochat2.models.llm import LLMConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMPretraining:
    """The tiny LLM to pretrain on the world's text: its weights, where it goes, on which files, how long."""

    config: LLMConfig
    out_dir: Path
    tokenizer: Path
    # Annotation files under <root>/annotations, by name (pretrain_video, instruction_video_mc, ...).
    corpus: tuple[str, ...]
    schedule: PretrainingSchedule


def lock_path(root: Path) -> Path:
    """`.<root name>.prepare.lock` next to the root."""
    return root.parent / f".{root.name}.prepare.lock"


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing), waiting while another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is preparing the embedded default (lock %s); waiting for it", path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def prepare(root: str | os.PathLike, world: dict | None = None, llm: LLMPretraining | None = None) -> Path:
    """Build the world under `root` (`world`: the settings of `build`) and pretrain `llm` on its text, once.

    The first process to ask does the work; any process asking meanwhile waits for it and then finds
    everything in place. Without `world` the root is taken as it is; without `llm` nothing is pretrained.
    """
    root = Path(root).resolve()
    if world is None and llm is None:
        return root
    with exclusive(lock_path(root)):
        if world is not None:
            build(root, **world)
        if llm is not None:
            text = load_pretraining_text([root / "annotations" / f"{name}.json" for name in llm.corpus])
            pretrain_tiny_llama(text, llm.tokenizer, llm.out_dir, llm.config, llm.schedule)
    return root
