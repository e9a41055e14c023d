"""The learning-rate schedule a run will follow, decided from its config and its train CSV before
any model is built: total optimiser steps, warm-up steps and peak learning rates, logged as the
run's first lines; a warm-up longer than half of the run fails here, in one line.

The count comes from the CSV without looking at the videos, so it is an upper bound when rows
are skipped for missing videos; the Lightning module plans the exact schedule from the data
module (same functions, covr.training.optim) when training starts and checks it again."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig

from covr.training.config import plain
from covr.training.optim import Schedule, ScheduleError, plan_schedule, steps_per_run

log = logging.getLogger(__name__)


def count_train_items(csv_path: str | Path, epoch_mode: str = "unique_targets") -> int:
    """Items of one training epoch from an annotation CSV: its distinct targets (`unique_targets`,
    CoVR's epoch) or its rows (`all_triplets`)."""
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        if "pth2" not in header:
            raise ScheduleError(f"{csv_path}: no pth2 column (header: {', '.join(header) or 'nothing'})")
        column = header.index("pth2")
        if epoch_mode == "all_triplets":
            return sum(1 for fields in reader if fields)
        return len({fields[column].strip() for fields in reader if len(fields) > column})


def world_size(trainer_cfg: Mapping[str, Any]) -> int | None:
    """Processes of the run (num_nodes x devices) as Lightning will resolve them; None when that
    depends on hardware this process cannot see (e.g. devices=-1 on a machine without GPUs)."""
    devices, accelerator = trainer_cfg.get("devices", 1), str(trainer_cfg.get("accelerator", "auto"))
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif isinstance(devices, str) and "," in devices:
        count = len([d for d in devices.split(",") if d.strip()])
    elif str(devices) in ("-1", "auto"):
        gpus = torch.cuda.device_count() if accelerator in ("gpu", "cuda", "auto") else 0
        count = gpus if gpus else (1 if accelerator in ("cpu", "auto") else None)
    else:
        count = int(devices)
    return None if not count else count * int(trainer_cfg.get("num_nodes", 1) or 1)


def plan_from_config(cfg: DictConfig | Mapping[str, Any], train_items: int, processes: int) -> tuple[Schedule, str]:
    """(schedule, how its steps were counted) for one stage config with `train_items` per epoch
    (drop_last batches of data.batch_size per process) on `processes` processes."""
    trainer, data = plain(cfg["trainer"]), plain(cfg["data"])
    batch = int(data["batch_size"])
    batches = train_items // processes // batch
    total = steps_per_run(batches, trainer.get("max_epochs"), trainer.get("max_steps"), trainer.get("limit_train_batches"), int(trainer.get("accumulate_grad_batches") or 1))
    context = f"{trainer.get('max_epochs')} epochs x {batches} batches; {train_items:,} train items / ({processes} process{'es' * (processes != 1)} x batch {batch})"
    if trainer.get("max_steps") not in (None, -1):
        context += f", max_steps={trainer['max_steps']}"
    return plan_schedule(plain(cfg["optim"]), total, context), context


def peak_learning_rates(cfg: DictConfig | Mapping[str, Any]) -> str:
    """Peak learning rate of each part that trains in the stage: X-Aligner (and its gates), the
    backbone's text encoder (stage 2), or the backbone (stage 0)."""
    optim, model = plain(cfg["optim"]), plain(cfg["model"])
    lr, stage = float(optim["lr"]), int(model.get("stage", 1))
    xaligner = model.get("query_head") == "xaligner"
    parts = []
    if xaligner and stage > 0:
        parts.append(f"X-Aligner {lr:.3g}")
        if (model.get("xaligner") or {}).get("residual") == "gate":
            parts.append(f"X-Aligner gates {lr * float(optim.get('gate_lr_scale', 1.0)):.3g}")
    if stage == 2:
        text_lr = optim.get("text_encoder_lr")
        parts.append(f"text encoder {float(text_lr if text_lr is not None else lr):.3g}")
    if stage == 0:
        parts.append(f"backbone {lr:.3g}")
    return ", ".join(parts)


def check_schedules(stages: list[DictConfig]) -> None:
    """Log the planned schedule of every stage and raise ScheduleError for one that does not fit,
    before anything is built. Stages without a train CSV on disk or whose process count depends
    on hardware not visible here are left to the check at the start of training."""
    for stage_cfg in stages:
        name = f"stage {stage_cfg.model.get('stage', 1)}"
        data = stage_cfg.get("data") or {}
        csv_path = (data.get("train") or {}).get("csv")
        processes = world_size(plain(stage_cfg.trainer))
        if not csv_path or not Path(csv_path).is_file() or processes is None:
            log.info("%s: schedule checked when training starts (%s)", name, "no train CSV here" if processes else "process count unknown here")
            continue
        items = count_train_items(csv_path, data.get("epoch_mode") or "unique_targets")
        if data.get("corrective_triplets") and data.get("epoch_mode") == "all_triplets":  # extra rows (their targets are the CSV's)
            from covr.data.triplets import read_triplets

            items += len(read_triplets(data["corrective_triplets"])[0])
        try:
            schedule, context = plan_from_config(stage_cfg, items, processes)
        except ScheduleError as error:
            raise ScheduleError(f"{name}: {error}") from None
        log.info("%s schedule: %s (%s; at most: rows with missing videos lower it); peak lr: %s", name, schedule.describe(), context, peak_learning_rates(stage_cfg))
