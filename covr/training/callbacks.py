"""Extra Lightning callbacks, selectable from the config (`callbacks: {name: {_target_: ...}}`)."""

from __future__ import annotations

import os

import pytorch_lightning as pl


class KillAtStep(pl.Callback):
    """Fault injection for resume tests: end the process abruptly (no cleanup, like a node failure
    or SIGKILL) when training is about to run optimiser step `step + 1`."""

    def __init__(self, step: int, exit_code: int = 17):
        self.step, self.exit_code = int(step), int(exit_code)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os._exit(self.exit_code)
