"""A CSV logger whose metrics.csv survives a resumed run.

Lightning's CSVLogger deletes an existing metrics.csv when it starts, so a preempted run that resumes
would lose every row logged before the interruption. Here the earlier rows are kept up to the step the
run resumed from; rows logged after that checkpoint (and before the kill) are replaced by the new ones,
so each step appears once and the step column is continuous. A rewrite goes through a temp file and a
rename, so an interruption during it leaves the previous file whole.
"""

from __future__ import annotations

import csv
import os

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class ResumingExperimentWriter(ExperimentWriter):
    """Appends while the columns stay the same; otherwise rewrites the whole file through a temp file.

    The merge with an earlier run's rows happens on the first save that has rows (Lightning's first save
    often has none), and every rewrite uses the union of the file's columns and the new ones, so a resume
    after validation logged `val/*` columns neither crashes nor loses history.
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self._merged = False

    def _check_log_dir_exists(self) -> None:
        """Keep an existing metrics.csv: its rows are merged on the first save instead."""

    def save(self) -> None:
        if not self.metrics:
            return
        new_keys = self._record_new_keys()
        if os.path.isfile(self.metrics_file_path) and (not self._merged or new_keys):
            first_new_step = None if self._merged else min(int(m["step"]) for m in self.metrics)
            self._rewrite(first_new_step)
        else:
            self._append()
        self._merged = True
        self.metrics = []

    def _append(self) -> None:
        exists = os.path.isfile(self.metrics_file_path)
        with open(self.metrics_file_path, "a" if exists else "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            if not exists:
                writer.writeheader()
            writer.writerows(self.metrics)

    def _rewrite(self, first_new_step: int | None) -> None:
        """The file's rows (those before `first_new_step` when given) then the buffered ones, all columns."""
        with open(self.metrics_file_path, newline="") as file:
            reader = csv.DictReader(file)
            earlier = [{k: v for k, v in row.items() if k is not None and v != ""} for row in reader]
            header = list(reader.fieldnames or [])
        if first_new_step is not None:
            earlier = [row for row in earlier if "step" in row and int(float(row["step"])) < first_new_step]
        self.metrics_keys[:] = sorted(set(header) | set(self.metrics_keys))
        partial = self.metrics_file_path + ".partial"
        with open(partial, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(earlier + self.metrics)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, self.metrics_file_path)


class ResumingCSVLogger(CSVLogger):
    """CSVLogger that appends to the run directory's metrics.csv across restarts (see module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ResumingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ResumingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
