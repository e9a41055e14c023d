"""The train and test runs behind `train.py` and `test.py` (configs in conf/)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from covr.models import load_model
from covr.models.checkpoint_io import read_checkpoint, trust_checkpoints
from covr.training.checkpointing import AtomicCheckpointIO, StepCheckpoint, atomic_torch_save, find_resume_checkpoint, sweep_stale_temporaries
from covr.training.config import plain
from covr.data.skips import summarise_file
from covr.training.datamodule import CoVRDataModule
from covr.training.loggers import TrimLogsOnResume
from covr.training.module import CoVRModule
from covr.training.preemption import CheckpointAndRequeue, RequeueSignal
from covr.training.preflight import missing_input, missing_package
from covr.training.prepare import prepare_caption_store, prepare_data, prepare_store
from covr.training.progress import ProgressLog
from covr.training.schedule import check_schedules
from covr.training.validate import ConfigValueError, validate_config

log = logging.getLogger(__name__)


def _stage_configs(cfg: DictConfig) -> list[DictConfig]:
    """One config per training stage: `stages` (a list of config overrides run in order, e.g. stage 1
    then stage 2) or, when it is empty, the config itself."""
    if not cfg.get("stages"):
        return [cfg]
    return [OmegaConf.merge(cfg, overrides) for overrides in cfg.stages]


def _loggers(cfg: DictConfig, save_dir: Path) -> list:
    out = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is not None:
            out.append(instantiate(logger_cfg, save_dir=str(save_dir)))
    return out


def _callbacks(
    cfg: DictConfig, checkpoint_dir: Path, has_val: bool, requeue_signal: RequeueSignal | None = None, label: str = "training"
) -> tuple[list, ModelCheckpoint | None]:
    """last.ckpt after every epoch and every `checkpoint.every_n_train_steps` (two callbacks: Lightning
    accepts only one trigger per ModelCheckpoint, and a step trigger alone would drop the epoch-end
    saves), best-by-val-R@1 apart (Lightning's save_last only refreshes last.ckpt when a new best is
    saved), last.ckpt on a checkpoint-and-requeue signal, a progress line every `progress_every_s`
    seconds (a log file sees no progress bar), plus configured extras."""
    latest = {"dirpath": str(checkpoint_dir), "filename": "last", "save_top_k": 1, "enable_version_counter": False}
    callbacks: list = [ModelCheckpoint(every_n_epochs=1, **latest)]
    if cfg.checkpoint.get("every_n_train_steps"):  # not on an epoch's last batch: the epoch-end save follows
        callbacks.append(StepCheckpoint(every_n_train_steps=int(cfg.checkpoint.every_n_train_steps), **latest))
    callbacks.append(TrimLogsOnResume())
    best = None
    if has_val:
        best = ModelCheckpoint(dirpath=str(checkpoint_dir), filename="best-step{step:07d}", monitor="val/R1", mode="max",
                               save_top_k=1, auto_insert_metric_name=False)  # fmt: skip
        callbacks.append(best)
    if requeue_signal is not None:
        callbacks.append(CheckpointAndRequeue(requeue_signal, checkpoint_dir / "last.ckpt"))
    if cfg.get("progress_every_s"):
        callbacks.append(ProgressLog(label, float(cfg.progress_every_s)))
    for callback_cfg in (cfg.get("callbacks") or {}).values():
        if callback_cfg is not None:
            callbacks.append(instantiate(callback_cfg))
    return callbacks, best


def _plugins() -> list:
    """Atomic checkpoint writes. Under Slurm, Lightning's own auto-requeue is off: it saves inside the
    signal handler, mid-step; covr's CheckpointAndRequeue saves at a step boundary instead."""
    plugins: list = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def fit_stage(cfg: DictConfig, stage_dir: Path, init_from: str | None, requeue_signal: RequeueSignal | None = None, label: str = "training") -> Path:
    """Train one stage in `stage_dir`; resume from its last checkpoint if an earlier attempt left one.
    Returns the stage's final checkpoint (best by val R@1, else last). `label` names the stage in
    progress lines ("stage 2 (3 of 3)")."""
    checkpoint_dir = stage_dir / "checkpoints"
    final = checkpoint_dir / "final.ckpt"
    if final.is_file():
        log.info("%s is complete (%s exists); skipping it", stage_dir, final)
        return final
    sweep_stale_temporaries(checkpoint_dir, stage_dir, stage_dir / "logs")  # a kill during a save leaves GBs behind
    resume = find_resume_checkpoint(checkpoint_dir, stage_dir) if cfg.resume == "auto" else (cfg.resume or None)
    model_cfg = plain(cfg.model)
    if init_from:  # also when resuming: the frozen target path (hence the embedding stores) comes from it
        model_cfg["init_from"] = str(init_from)
    online_captions = cfg.data.get("caption_features", "online") == "online"
    module = CoVRModule(model_cfg, plain(cfg.loss), plain(cfg.optim), tuple(cfg.get("recall_ks", (1, 5, 10, 50))), online_captions)
    data_cfg = plain(cfg.data)
    store_identity = prepare_store(data_cfg, module.model, stage_dir)
    prepare_caption_store(data_cfg, module.model, plain(cfg.loss))  # CoVR-2's frozen caption features, checked up front
    datamodule = CoVRDataModule(data_cfg, module.model.image_size, store_identity, report_dir=stage_dir, seed=int(cfg.seed))
    has_val = bool(data_cfg.get("val"))
    callbacks, best = _callbacks(cfg, checkpoint_dir, has_val, requeue_signal, label)
    trainer_cfg = plain(cfg.trainer)
    if trainer_cfg.get("enable_progress_bar") is None:  # a bar only where it can redraw: a terminal
        trainer_cfg["enable_progress_bar"] = sys.stdout.isatty()
    trainer = pl.Trainer(
        **trainer_cfg,
        default_root_dir=str(stage_dir),
        logger=_loggers(cfg, stage_dir) or False,
        callbacks=callbacks,
        plugins=_plugins(),
        use_distributed_sampler=False,  # covr's EpochSampler shards by rank itself (and resumes mid-epoch)
    )
    if resume:
        log.info("resuming from %s", resume)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
    trainer.save_checkpoint(checkpoint_dir / "last.ckpt", weights_only=False)  # the final state, whatever the save schedule
    if trainer.global_rank == 0:
        _report_skips(datamodule, stage_dir)
        best_path = best.best_model_path if best is not None else ""
        source = Path(best_path) if best_path else checkpoint_dir / "last.ckpt"
        atomic_torch_save(read_checkpoint(source), final)
        log.info("stage finished: %s (from %s)", final, source.name)
    trainer.strategy.barrier()
    return final


def _report_skips(datamodule: CoVRDataModule, stage_dir: Path) -> None:
    """One line per split with every row skipped in this stage: up front and while training, by any
    process (the report files are shared)."""
    for split, dataset in (("train", datamodule.train_dataset), ("val", datamodule.val_dataset)):
        line = summarise_file(stage_dir, split, dataset.skipped.total_rows) if dataset is not None else None
        if line:
            (log.warning if " rows: " in line else log.info)("stage data: %s", line)


def train(cfg: DictConfig) -> dict[str, Any] | None:
    """All stages of the configured experiment, then (optionally) the test benchmarks."""
    validate_config(cfg)
    with trust_checkpoints(bool(cfg.get("trust_checkpoint", False))):  # full unpickling only by opt-in
        return _train(cfg)


def _train(cfg: DictConfig) -> dict[str, Any] | None:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    run_dir = Path(cfg.paths.run_dir)
    _fail_on(missing_package(cfg))  # before anything is written or built
    prepare_data(cfg.data)
    stages = _stage_configs(cfg)
    _fail_on(missing_input(stages, cfg))
    pl.seed_everything(int(cfg.seed), workers=True)
    check_schedules(stages)  # steps, warm-up, peak lrs logged first; a warm-up over half of a stage fails here
    init_from = cfg.model.get("init_from")
    final: Path | None = None
    numbers = [int(s.model.stage) for s in stages]
    preemption = plain(cfg.get("preemption")) or {}
    with RequeueSignal(preemption.get("signals") or (), preemption.get("requeue", True)) as requeue_signal:
        for i, (stage_cfg, number) in enumerate(zip(stages, numbers)):
            name = f"stage{number}" if numbers.count(number) == 1 else f"stage{number}_{i}"
            stage_dir = run_dir if len(stages) == 1 else run_dir / name
            label = f"stage {number}" + (f" ({i + 1} of {len(stages)})" if len(stages) > 1 else "")
            final = fit_stage(stage_cfg, stage_dir, init_from, requeue_signal, label)
            init_from = str(final)
            requeue_signal.exit_if_requested(_is_global_zero(), f"{name} is complete; the requeued job continues after it")
    if cfg.get("test_after_training") and cfg.get("test") and _is_global_zero():
        return test_checkpoint(cfg, final, run_dir)
    return None


def test_checkpoint(cfg: DictConfig, checkpoint: str | Path, out_dir: Path) -> dict[str, Any]:
    """Evaluate a covr checkpoint on `cfg.test` ({name: benchmark config}); results.json in out_dir."""
    validate_config(cfg)
    with trust_checkpoints(bool(cfg.get("trust_checkpoint", False))):  # full unpickling only by opt-in
        retriever = load_model(checkpoint).eval()  # any format: covr checkpoint or folder, LAVIS / CoVR file, hub id
    device = cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    from covr.eval import evaluate_benchmarks  # training runs without test benchmarks never import the evaluator

    results = evaluate_benchmarks(
        retriever.to(device),
        plain(cfg.test),
        out_dir,
        batch_size=int(cfg.get("test_batch_size", 32)),
        num_workers=int(cfg.data.get("num_workers", 4)) if cfg.get("data") else int(cfg.get("num_workers", 4)),
        similarity=cfg.get("similarity"),  # null: each benchmark protocol's own
        cache_dir=Path(cfg.paths.cache_dir) / "galleries" if cfg.get("cache_galleries", True) else None,
        device=device,
        save_rankings=bool(cfg.get("save_rankings", False)),
        save_embeddings=bool(cfg.get("save_embeddings", False)),
        override_prefix="benchmark" if "benchmark" in cfg else "test",  # test.py composes test: ${benchmark}
        rerank=cfg.get("rerank"),  # SoFT for every benchmark (each names its constraint_file)
        soft_lambda=cfg.get("soft_lambda"),
        report=bool(cfg.get("report", False)),  # <run>/report/<benchmark>.html and .png
        report_queries=int(cfg.get("report_queries", 24)),
        report_top_k=int(cfg.get("report_top_k", 5)),
    )  # the table gives each task's chance level
    print(f"results: {Path(out_dir) / 'results.json'}")
    return results


def _fail_on(problem: str | None) -> None:
    if problem:
        raise ConfigValueError(problem)


def _is_global_zero() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0

