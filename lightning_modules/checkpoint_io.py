"""Checkpoint writes that never leave a half-written `last.ckpt`.

Lightning's own save serialises to memory and lets fsspec write the file through a temporary file in
`$TMPDIR`; when that lies on another filesystem the "move" is a truncate and a copy, so a kill during the
copy leaves an empty or partial `last.ckpt` where the previous good one was. Here the checkpoint is written
to a temporary file next to its target, flushed to disk, and renamed over it (`os.replace` is atomic on one
filesystem): a reader sees the old file or the new one, never a mix, and a failed write leaves no temp file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (a crash right after it must not bring back the old name's file)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """`torch.save(obj, path)` through a temp file beside `path`, fsync and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local saves go through `atomic_torch_save`; remote URLs keep Lightning's path."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)
