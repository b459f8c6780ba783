"""A CSV logger whose metrics.csv survives a resumed run.

Lightning's CSVLogger deletes an existing metrics.csv when it starts, so a preempted run that resumes
would lose every row logged before the interruption. Here the earlier rows are kept up to the step the
run resumed from; rows logged after that checkpoint (and before the kill) are replaced by the new ones,
so each step appears once and the step column is continuous.
"""

from __future__ import annotations

import csv
import os

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class ResumingExperimentWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self._merged = False

    def _check_log_dir_exists(self) -> None:
        """Keep an existing metrics.csv: its rows are merged on the first save instead."""

    def save(self) -> None:
        if not self._merged and self.metrics and os.path.isfile(self.metrics_file_path):
            self._merged = True
            self._rewrite_with_earlier_rows()
            return
        self._merged = True
        super().save()

    def _rewrite_with_earlier_rows(self) -> None:
        first_new_step = min(int(m["step"]) for m in self.metrics)
        with open(self.metrics_file_path, newline="") as file:
            earlier = [
                {k: v for k, v in row.items() if v != ""}
                for row in csv.DictReader(file)
                if int(float(row["step"])) < first_new_step
            ]
        self.metrics = earlier + self.metrics
        self._record_new_keys()
        partial = self.metrics_file_path + ".partial"
        with open(partial, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(self.metrics)
        os.replace(partial, self.metrics_file_path)
        self.metrics = []


class ResumingCSVLogger(CSVLogger):
    """CSVLogger that appends to the run directory's metrics.csv across restarts (see module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ResumingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ResumingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
