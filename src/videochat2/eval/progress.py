"""Progress of an evaluation loop: a bar with ETA on a terminal, and the same numbers as a periodic log line.

A person at a terminal watches the bar (tqdm; it switches itself off when stderr is not a terminal). A batch
job has no terminal, and its log is what a cluster user tails, so every `every_s` seconds (and once at the
end) one line with done/total, rate and ETA goes to the logger as well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tqdm.auto import tqdm

log = logging.getLogger("videochat2.eval")


def format_duration(seconds: float) -> str:
    """`H:MM:SS` (hours grow past 24 rather than wrap)."""
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Count finished items; `line()` says how far, how fast and how long is left."""

    def __init__(
        self,
        total: int,
        what: str = "questions",
        every_s: float = 30.0,
        logger: logging.Logger = log,
        clock: Callable[[], float] = time.monotonic,
        bar: bool | None = None,
    ) -> None:
        self.total, self.what, self.every_s, self.logger, self.clock = total, what, every_s, logger, clock
        self.done = 0
        self.start = self.last_logged = clock()
        # bar=None: a bar only when stderr is a terminal (tqdm's own test); False: never.
        unit = what[:-1] if what.endswith("s") else what
        self.bar = tqdm(total=total, unit=unit, disable=True if bar is False else None)

    def line(self) -> str:
        elapsed = self.clock() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        percent = 100.0 * self.done / self.total if self.total else 100.0
        eta = format_duration((self.total - self.done) / rate) if rate > 0 else "?"
        return (
            f"{self.what} {self.done}/{self.total} ({percent:.0f}%), {rate:.2f}/s, "
            f"elapsed {format_duration(elapsed)}, ETA {eta}"
        )

    def update(self, count: int) -> None:
        """`count` more items are done; log a line when `every_s` has passed since the last one."""
        self.done += count
        self.bar.update(count)
        if self.clock() - self.last_logged >= self.every_s and self.done < self.total:
            self.logger.info(self.line())
            self.last_logged = self.clock()

    def close(self) -> None:
        """The final line (always logged) and the bar closed."""
        self.bar.close()
        self.logger.info(self.line())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
