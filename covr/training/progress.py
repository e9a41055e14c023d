"""Training progress as log lines, so that a log file (train.log, a Slurm output file, `> log.txt`)
shows where a run is: Lightning's progress bar only draws on a terminal.

    stage 2 (3 of 3): epoch 6/14, step 261/644 (40.5%), loss 3.8124 | 5.1 steps/s, ETA 1m15s

A line every `every_s` seconds of training and one when the stage's training ends. While a bar is
drawn on the terminal the interval lines go to the log file only (a log line would break the bar).
"""

from __future__ import annotations

import logging
import math
import sys
import time

import pytorch_lightning as pl

from covr.progress import format_duration, rate_and_eta

log = logging.getLogger(__name__)


class _NotOnTerminal(logging.Filter):
    """Drops this module's interval lines from handlers that write to a terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == __name__ and getattr(record, "interval", False))


class ProgressLog(pl.Callback):
    """Logs stage, epoch, step / total, loss, speed and ETA every `every_s` seconds (rank 0)."""

    def __init__(self, stage: str, every_s: float = 30.0):
        self.stage, self.every_s = stage, float(every_s)
        self._filter = _NotOnTerminal()
        self._muted: list[logging.Handler] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = trainer.estimated_stepping_batches  # inf for a run bounded by neither steps nor epochs
        self.total = int(total) if math.isfinite(total) else 0
        self.first_step = int(trainer.global_step)  # a resumed stage starts past 0
        self.start = self.last = time.monotonic()
        if trainer.is_global_zero:
            resumed = f", resuming at step {self.first_step}" if self.first_step else ""
            planned = f"{self.total} optimiser steps" if self.total else "without a step limit"
            log.info("%s: training %s%s", self.stage, planned, resumed)
        if trainer.progress_bar_callback is not None:  # the bar shows progress on the terminal
            self._muted = [h for h in logging.getLogger().handlers if _writes_to_terminal(h)]
            for handler in self._muted:
                handler.addFilter(self._filter)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        if trainer.is_global_zero and now - self.last >= self.every_s:
            self.last = now
            log.info("%s", self.line(trainer, now), extra={"interval": True})

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self._muted:
            handler.removeFilter(self._filter)
        self._muted = []
        if trainer.is_global_zero:
            elapsed = time.monotonic() - self.start
            total = f"/{self.total}" if self.total else ""
            log.info("%s: trained to step %d%s in %s", self.stage, trainer.global_step, total, format_duration(elapsed))

    def line(self, trainer: pl.Trainer, now: float) -> str:
        step = int(trainer.global_step)
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        loss = trainer.callback_metrics.get("train/loss")
        loss_text = f", loss {float(loss):.4f}" if loss is not None else ""
        share = f" ({100 * step / self.total:.1f}%)" if self.total else ""
        remaining = self.total - self.first_step if self.total else None
        speed = rate_and_eta(step - self.first_step, remaining, now - self.start, "steps")
        total = f"/{self.total}" if self.total else ""
        return f"{self.stage}: epoch {trainer.current_epoch + 1}{epochs}, step {step}{total}{share}{loss_text} | {speed}"


def _writes_to_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return not isinstance(handler, logging.FileHandler) and stream is not None and stream in (sys.stdout, sys.stderr) and stream.isatty()
