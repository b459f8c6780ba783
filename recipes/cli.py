"""Command-line helpers shared by train.py and eval.py."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from videochat2.checkpoints import CheckpointError
from videochat2.data.video import MediaReadError
from videochat2.run_lock import RunLockedError

# What a user can fix from the command line or the file system; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, CheckpointError, MediaReadError, RunLockedError)

_STAGE = re.compile(r"(?P<key>stage|\+stage|~stage)=(?P<values>[0-9]+(?:,[0-9]+)*)")


def quote_stage_overrides(args: list[str]) -> list[str]:
    """Let users type `stage=2` (and `stage=1,2` in sweeps).

    `stage` is a config group whose options are named 1, 2 and 3; Hydra rejects an integer as a
    group choice ("Config group override must be a string"), so the digits are quoted before
    Hydra parses the command line. Everything else passes through unchanged.
    """
    quoted = []
    for arg in args:
        match = _STAGE.fullmatch(arg)
        if match:
            values = ",".join(f"'{v}'" for v in match["values"].split(","))
            arg = f"{match['key']}={values}"
        quoted.append(arg)
    return quoted


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("💡 Tip")


def quiet_framework_tips() -> None:
    """Lightning advertises cloud services in the job log at every start; a log is for the run."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_a_tip)


@contextmanager
def user_errors(program: str) -> Iterator[None]:
    """A mistake the user can fix ends the command with its message alone, not a traceback around it.

    `HYDRA_FULL_ERROR=1` (Hydra's own switch) keeps the traceback, for reports.
    """
    try:
        yield
    except USER_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SystemExit(f"{program}: error: {error}") from None
