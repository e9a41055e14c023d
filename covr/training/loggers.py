"""Loggers that survive a resume: `logs/metrics.csv` keeps every row written before a kill.

Lightning's CSVLogger deletes an existing metrics.csv when it starts ("previous log files will be
deleted"), so a resumed run loses its history. `ResumableCSVLogger` appends instead, and writes
each row as it is logged (rows are logged every `trainer.log_every_n_steps` steps: cheap), so a
kill loses no row of a step the checkpoint holds. `TrimLogsOnResume` drops the rows of steps the
resumed run redoes (logged after its checkpoint, before the kill), so every step appears once.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

log = logging.getLogger(__name__)


class _AppendingWriter(ExperimentWriter):
    """ExperimentWriter that keeps an existing metrics.csv and continues it (header included)."""

    def _check_log_dir_exists(self) -> None:  # Lightning's version deletes metrics.csv
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as handle:
                header = next(csv.reader(handle), [])
            self.metrics_keys = [key for key in header if key]

    def drop_rows_from(self, step: int) -> int:
        """Remove rows with step >= `step` (the steps a resumed run redoes); returns how many."""
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return 0
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        kept = [row for row in rows if not (row.get("step", "").isdigit() and int(row["step"]) >= step)]
        if len(kept) == len(rows):
            return 0
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, path)
        return len(rows) - len(kept)


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv is continued, not replaced, when a run resumes in its folder."""

    def __init__(self, *args: Any, flush_logs_every_n_steps: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, flush_logs_every_n_steps=flush_logs_every_n_steps, **kwargs)

    @property
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class TrimLogsOnResume(pl.Callback):
    """After a resume, drop the metrics.csv rows of the steps the run redoes (ResumableCSVLogger)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = int(trainer.global_step)  # optimiser steps the checkpoint holds; rows carry the step they ran at
        if step == 0 or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            writer = getattr(logger, "experiment", None) if isinstance(logger, ResumableCSVLogger) else None
            dropped = writer.drop_rows_from(step) if writer is not None else 0
            if dropped:
                log.info("%s: dropped %d rows logged after step %d (the resumed run logs those steps again)", writer.metrics_file_path, dropped, step)
