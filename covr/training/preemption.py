"""Checkpoint-and-requeue on a signal: Slurm time limits and preemption.

Slurm sends the signal of `#SBATCH --signal=SIGUSR1@90` to every task 90 s before the time limit
(the Hydra submitit launcher uses SIGUSR2, `hydra.launcher.signal_delay_s` before it). Nothing is
safe to do inside a signal handler in the middle of a step, so the handler only records the
request. At the next optimiser-step boundary every rank agrees on it (one all-reduce), the run
saves `<stage>/checkpoints/last.ckpt` (data-loader position included), rank 0 requeues the job,
and every process exits with `EXIT_REQUEUED`.

The requeued job keeps its Slurm job id, so `run_id` (`${job_id_or_now:}`, covr.training.config) names
the same run folder and `resume: auto` continues from that checkpoint: no step is lost or
repeated. Requeueing: under submitit the launcher's own handler (which re-submits the same Hydra
job and calls `scontrol requeue`) is called after the save; otherwise rank 0 runs
`scontrol requeue <job id>`; outside Slurm nothing is requeued and the same command resumes.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl

from covr.training.config import slurm_job_id

log = logging.getLogger(__name__)

EXIT_REQUEUED = 75  # EX_TEMPFAIL: "temporary failure, try again"


class Requeued(SystemExit):
    """Raised on every rank after the checkpoint was saved and the job requeued."""

    def __init__(self, step: int):
        super().__init__(EXIT_REQUEUED)
        self.step = step


class RequeueSignal:
    """Records checkpoint-and-requeue signals for the whole run (a context manager).

    signals: names such as "SIGUSR1". requeue: False only saves and exits (the scheduler or the
    user restarts the job). Installed before data-loader workers fork, so they inherit a handler
    that only sets a flag instead of the default action (terminate)."""

    def __init__(self, signals: Iterable[str] = ("SIGUSR1", "SIGUSR2"), requeue: bool = True):
        self.signals = [getattr(signal, name) if isinstance(name, str) else signal.Signals(name) for name in signals]
        self.requeue_job = bool(requeue)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> RequeueSignal:
        if threading.current_thread() is not threading.main_thread():  # signal.signal would raise
            log.warning("not in the main thread: no checkpoint-and-requeue signal handler")
            return self
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum  # only a flag: the step in progress finishes first

    @property
    def requested(self) -> bool:
        return self.received is not None

    def agree(self) -> None:
        """Another rank got the signal: act as if this one had too."""
        if self.received is None and self.signals:
            self.received = int(self.signals[0])

    def requeue(self, is_global_zero: bool) -> None:
        """Requeue the job (call after the checkpoint is on disk). A Python handler that was installed
        before ours (submitit's) is called with the signal; otherwise rank 0 runs `scontrol requeue`."""
        if not self.requeue_job or self.received is None:
            return
        previous = self._previous.get(self.received)
        if callable(previous):
            previous(self.received, None)  # submitit: re-dumps the job, requeues it and exits on rank 0
            return
        if not is_global_zero:
            return
        job_id = slurm_job_id()
        if job_id is None or shutil.which("scontrol") is None:
            log.warning("not in a Slurm job (or no scontrol): nothing requeued; run the same command again to resume")
            return
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
        if result.returncode == 0:
            log.info("requeued Slurm job %s", job_id)
        else:
            log.error("scontrol requeue %s failed (%d): %s", job_id, result.returncode, result.stderr.strip())

    def exit_if_requested(self, is_global_zero: bool, what: str) -> None:
        """Between stages (nothing to save): requeue and exit if a signal came."""
        if self.requested:
            log.warning("requeue signal %s received; %s", signal.Signals(self.received).name, what)
            self.requeue(is_global_zero)
            raise Requeued(-1)


class CheckpointAndRequeue(pl.Callback):
    """At the first optimiser-step boundary after a requeue signal (on any rank): save
    `checkpoint_path`, requeue (RequeueSignal.requeue) and exit every rank with `Requeued`.

    Mid-epoch the checkpoint is saved when the step ends and the processes exit when the next batch
    starts, once Lightning has logged the step (its metrics row would be lost otherwise). A signal
    during an epoch's last batch is served at the epoch's end, after its validation: a checkpoint
    from the last batch would resume into the next epoch without that validation (its val R@1 row
    and its chance to be the best checkpoint lost), so the lead time must also cover a validation."""

    def __init__(self, requeue_signal: RequeueSignal, checkpoint_path: str | Path):
        self.requeue_signal = requeue_signal
        self.checkpoint_path = str(checkpoint_path)
        self._saved_step: int | None = None

    def _save_if_requested(self, trainer: pl.Trainer) -> bool:
        if not trainer.strategy.reduce_boolean_decision(self.requeue_signal.requested, all=False):  # every rank agrees
            return False
        self.requeue_signal.agree()
        self._saved_step = int(trainer.global_step)
        trainer.save_checkpoint(self.checkpoint_path)  # collective; rank 0 writes (atomically)
        if trainer.is_global_zero:
            log.warning("requeue signal: saved %s at step %d; requeueing", self.checkpoint_path, self._saved_step)
        return True

    def _exit(self, trainer: pl.Trainer) -> None:
        self.requeue_signal.requeue(trainer.is_global_zero)
        raise Requeued(self._saved_step if self._saved_step is not None else int(trainer.global_step))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            return  # the epoch's last batch: served in on_train_epoch_end, after validation
        if (batch_idx + 1) % int(trainer.accumulate_grad_batches):
            return  # mid-accumulation: the partial gradient would be lost
        self._save_if_requested(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self._saved_step is not None:  # saved at the end of the previous step, which is logged by now
            self._exit(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._saved_step is not None or self._save_if_requested(trainer):
            self._exit(trainer)
