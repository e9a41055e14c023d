"""AdamW with stage-aware parameter groups, and the run's learning-rate schedule: linear warm-up
(a fraction of the run's optimiser steps, or absolute steps) then cosine decay, from transformers.

The schedule is planned from numbers a config and a train-set size give (`steps_per_run`,
`plan_schedule`), so a run can check it before any model is built (covr.training.schedule) and
the Lightning module builds exactly the same one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn
from transformers import get_cosine_with_min_lr_schedule_with_warmup

MAX_WARMUP_SHARE = 0.5  # a warm-up longer than this share of the run leaves no time at the peak


class ScheduleError(ValueError):
    """A learning-rate schedule that does not fit the run (e.g. warm-up longer than half of it)."""


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float, text_encoder_lr: float | None = None, gate_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """Trainable parameters split into (X-Aligner | backbone text encoder) x (decay | no decay),
    plus X-Aligner's scalar gates (when it has them) in a group of their own.

    No weight decay on biases, norms, gates, embeddings and learned tokens (1-D tensors or names
    with 'embedding'/'tokens'), as usual for transformers. The backbone's text encoder (stage 2)
    may use its own learning rate; the gates use lr x gate_lr_scale (a zero-initialised scalar
    moves by about one learning rate per Adam step, see README "X-Aligner")."""
    groups: dict[tuple[str, str], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "backbone" if name.startswith("backbone.") else "head"
        if part == "head" and ".gates." in name:
            kind = "gate"
        else:
            kind = "decay" if p.ndim >= 2 and "embedding" not in name and "tokens" not in name else "no_decay"
        groups.setdefault((part, kind), []).append(p)
    out = []
    for (part, kind), params in sorted(groups.items()):
        group_lr = text_encoder_lr if (part == "backbone" and text_encoder_lr is not None) else lr
        if kind == "gate":
            group_lr = lr * gate_lr_scale
        out.append({"params": params, "lr": group_lr, "weight_decay": weight_decay if kind == "decay" else 0.0, "name": f"{part}/{kind}"})
    if not out:
        raise ValueError("no trainable parameters: check the stage and text_encoder settings")
    return out


def make_optimizer(groups: list[dict[str, Any]], betas=(0.9, 0.999), eps: float = 1e-8, fused: bool | None = None) -> torch.optim.Optimizer:
    """AdamW; fused kernels when every parameter is on CUDA (or when asked)."""
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, betas=tuple(betas), eps=eps, fused=fused or None)


@dataclass(frozen=True)
class Schedule:
    """Optimiser steps of the whole run, how many of them warm up, and the final lr / peak lr."""

    total_steps: int
    warmup_steps: int
    min_lr_ratio: float = 0.0

    def describe(self) -> str:
        share = self.warmup_steps / max(1, self.total_steps)
        decay = "then constant" if self.min_lr_ratio == 1.0 else f"cosine decay to {self.min_lr_ratio:g} x peak"
        return f"{self.total_steps} optimiser steps, warm-up {self.warmup_steps} steps ({share:.1%}), {decay}"


def steps_per_run(batches_per_epoch: int, max_epochs: int | None, max_steps: int | None = -1, limit_train_batches: float | int | None = None, accumulate: int = 1) -> int:
    """Optimiser steps Lightning will run: `max_epochs` epochs of `batches_per_epoch` batches per
    process (cut by `limit_train_batches`, an int count or a float share), `accumulate` batches per
    step, stopped at `max_steps` when that comes first (-1 / None = no step limit)."""
    if limit_train_batches is not None:
        limited = isinstance(limit_train_batches, int) and not isinstance(limit_train_batches, bool)
        batches_per_epoch = min(batches_per_epoch, int(limit_train_batches)) if limited else int(batches_per_epoch * float(limit_train_batches))
    per_epoch = -(-batches_per_epoch // max(1, int(accumulate)))
    step_limit = int(max_steps) if max_steps is not None and int(max_steps) > 0 else None
    if max_epochs is None or int(max_epochs) < 0:  # epochs unlimited: the step limit ends the run
        if step_limit is None:
            raise ScheduleError("the run has neither max_epochs nor max_steps: the schedule needs a length")
        return step_limit
    total = int(max_epochs) * per_epoch
    return max(1, min(total, step_limit) if step_limit is not None else total)


def plan_schedule(optim_cfg: Mapping[str, Any], total_steps: int, context: str = "") -> Schedule:
    """The schedule of a run of `total_steps` optimiser steps from the optim config:
    `warmup_steps` (absolute, wins when set) or `warmup_fraction` of the run (rounded half up),
    and `min_lr_ratio`. Raises ScheduleError (one line, naming the numbers and `context`, e.g. how
    the steps were counted) when the warm-up covers more than half of the run."""
    total = max(1, int(total_steps))
    steps, fraction = optim_cfg.get("warmup_steps"), float(optim_cfg.get("warmup_fraction") or 0.0)
    if not 0.0 <= fraction <= 1.0:
        raise ScheduleError(f"optim.warmup_fraction={fraction} must be within [0, 1]")
    warmup = int(steps) if steps is not None else int(fraction * total + 0.5)
    where = f" ({context})" if context else ""
    if warmup < 0:
        raise ScheduleError(f"optim.warmup_steps={warmup} must be >= 0")
    if warmup > MAX_WARMUP_SHARE * total:
        how = f"optim.warmup_steps={warmup}" if steps is not None else f"optim.warmup_fraction={fraction:g} ({warmup} steps)"
        raise ScheduleError(
            f"{how} covers more than half of the run's {total} optimiser steps{where}: the learning rate would barely "
            f"reach its peak; use a smaller optim.warmup_fraction (e.g. 0.05) and optim.warmup_steps=null"
        )
    ratio = float(optim_cfg.get("min_lr_ratio", 0.0))
    if not 0.0 <= ratio <= 1.0:
        raise ScheduleError(f"optim.min_lr_ratio={ratio} must be within [0, 1]")
    return Schedule(total, warmup, ratio)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, schedule: Schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' cosine schedule: lr x step / warmup during the warm-up (0 at step 0), then
    lr x (r + (1 - r) x (1 + cos(pi x progress)) / 2) with r = min_lr_ratio, per parameter group."""
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=schedule.warmup_steps, num_training_steps=schedule.total_steps, min_lr_rate=schedule.min_lr_ratio
    )


def describe_groups(groups: list[dict[str, Any]]) -> list[str]:
    """One line per parameter group: name, peak lr, weight decay, parameter count."""
    return [
        f"  {g.get('name', i)}: peak lr {g['lr']:.3g}, weight decay {g['weight_decay']:g}, {sum(p.numel() for p in g['params']):,} parameters"
        for i, g in enumerate(groups)
    ]
