"""Extra Lightning callbacks, selectable from the config (`callbacks: {name: {_target_: ...}}`)."""

from __future__ import annotations

import os

import pytorch_lightning as pl


class KillAtStep(pl.Callback):
    """Fault injection for resume tests: end the process abruptly (no cleanup, like a node failure
    or SIGKILL) once optimiser step `step` is done.

    at="batch_start" (default): when training is about to run step `step + 1`, i.e. after every save
    of step `step`, including an epoch-end save. at="epoch_end": in the epoch-end hook of the epoch
    whose last step is `step`, before the checkpoint callbacks (which Lightning runs last) write
    their epoch-end save: what is on disk is what was saved on the epoch's last batch."""

    def __init__(self, step: int, exit_code: int = 17, at: str = "batch_start"):
        if at not in ("batch_start", "epoch_end"):
            raise ValueError(f"KillAtStep at={at!r}; expected 'batch_start' or 'epoch_end'")
        self.step, self.exit_code, self.at = int(step), int(exit_code), at

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self.at == "batch_start" and trainer.global_step == self.step:
            os._exit(self.exit_code)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at == "epoch_end" and trainer.global_step == self.step:
            os._exit(self.exit_code)


class SignalAtStep(pl.Callback):
    """Fault injection for preemption tests: this process sends itself `signal` (a name such as
    "SIGUSR1", what Slurm sends before a time limit) while optimiser step `step` is running."""

    def __init__(self, step: int, signal: str = "SIGUSR1"):
        import signal as signals

        self.step, self.signum = int(step), getattr(signals, signal)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step - 1:
            os.kill(os.getpid(), self.signum)
