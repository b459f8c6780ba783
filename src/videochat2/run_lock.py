"""One run at a time in a stage directory: a lock file that names the process holding it.

Two processes training into one directory would both write `checkpoints/last.ckpt` and metrics.csv, and
whichever wrote last would silently win. The lock is a file created exclusively (`O_CREAT | O_EXCL`)
holding `<host> <pid> [<SLURM job id>]`; a second run is refused with one line naming them. A lock left by
a process that died (SIGKILL, a crashed node) is taken over when its pid is gone on this host, or when it
was written by an earlier incarnation of this same SLURM job (a requeue after a node failure lands on
another host, and the old incarnation is gone by then); any other lock from another host cannot be
checked from here, so the message says how to remove it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

LOCK_NAME = ".run.lock"


class RunLockedError(RuntimeError):
    """Another live process is training in this directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _slurm_job() -> str | None:
    return os.environ.get("SLURM_JOB_ID")


def _holder(path: Path) -> tuple[str, int, str | None] | None:
    """(host, pid, SLURM job id) written in a lock file; None when unreadable (a writer that died mid-write)."""
    try:
        host, pid, *job = path.read_text().split()
        return host, int(pid), job[0] if job else None
    except (OSError, ValueError):
        return None


class RunLock:
    """`with RunLock(stage_dir):` holds `<stage_dir>/.run.lock` for the duration of a run."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as file:
                file.write(" ".join([socket.gethostname(), str(os.getpid()), *filter(None, [_slurm_job()])]) + "\n")
            self.held = True
            return
        self._refuse()

    def _take_over_if_stale(self) -> None:
        """Remove the lock of a process that no longer exists on this host; anything else stays."""
        holder = _holder(self.path)
        dead_here = holder is not None and holder[0] == socket.gethostname() and not _alive(holder[1])
        requeued = holder is not None and holder[2] is not None and holder[2] == _slurm_job()
        if holder is None or dead_here or requeued:
            self.path.unlink(missing_ok=True)

    def _refuse(self) -> None:
        holder = _holder(self.path)
        who = f"process {holder[1]} on {holder[0]}" if holder else "another process"
        raise RunLockedError(
            f"{self.path.parent} is in use by {who} (lock file {self.path}); wait for that run to end or use "
            "another run_name (if no run is active there, delete the lock file)"
        )

    def release(self) -> None:
        holder = _holder(self.path)
        if self.held and holder is not None and holder[:2] == (socket.gethostname(), os.getpid()):
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
