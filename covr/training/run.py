"""The train and test runs behind `train.py` and `test.py` (configs in conf/)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from covr.eval import evaluate_benchmarks
from covr.models import load_model
from covr.training.checkpointing import AtomicCheckpointIO, atomic_torch_save, find_resume_checkpoint
from covr.training.config import plain
from covr.training.datamodule import CoVRDataModule
from covr.training.module import CoVRModule
from covr.training.preemption import CheckpointAndRequeue, RequeueSignal
from covr.training.prepare import prepare_data, prepare_store
from covr.training.validate import validate_config

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


def _callbacks(cfg: DictConfig, checkpoint_dir: Path, has_val: bool, requeue_signal: RequeueSignal | None = None) -> tuple[list, ModelCheckpoint | None]:
    """last.ckpt after every epoch (and every `checkpoint.every_n_train_steps`), best-by-val-R@1 apart
    (Lightning's save_last only refreshes last.ckpt when a new best is saved), last.ckpt on a
    checkpoint-and-requeue signal, plus configured extras."""
    latest = ModelCheckpoint(
        dirpath=str(checkpoint_dir),
        filename="last",
        save_top_k=1,
        every_n_train_steps=cfg.checkpoint.get("every_n_train_steps"),
        enable_version_counter=False,
    )
    best = None
    callbacks = [latest]
    if has_val:
        best = ModelCheckpoint(dirpath=str(checkpoint_dir), filename="best-step{step:07d}", monitor="val/R1", mode="max",
                               save_top_k=1, auto_insert_metric_name=False)  # fmt: skip
        callbacks.append(best)
    if requeue_signal is not None:
        callbacks.append(CheckpointAndRequeue(requeue_signal, checkpoint_dir / "last.ckpt"))
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


def fit_stage(cfg: DictConfig, stage_dir: Path, init_from: str | None, requeue_signal: RequeueSignal | None = None) -> Path:
    """Train one stage in `stage_dir`; resume from its last checkpoint if an earlier attempt left one.
    Returns the stage's final checkpoint (best by val R@1, else last)."""
    checkpoint_dir = stage_dir / "checkpoints"
    final = checkpoint_dir / "final.ckpt"
    if final.is_file():
        log.info("%s is complete (%s exists); skipping it", stage_dir, final)
        return final
    resume = find_resume_checkpoint(checkpoint_dir, stage_dir) if cfg.resume == "auto" else (cfg.resume or None)
    model_cfg = plain(cfg.model)
    if init_from and not resume:
        model_cfg["init_from"] = str(init_from)
    module = CoVRModule(model_cfg, plain(cfg.loss), plain(cfg.optim), tuple(cfg.get("recall_ks", (1, 5, 10, 50))))
    data_cfg = plain(cfg.data)
    store_identity = prepare_store(data_cfg, module.model, stage_dir)
    datamodule = CoVRDataModule(data_cfg, module.model.image_size, store_identity, report_dir=stage_dir, seed=int(cfg.seed))
    has_val = bool(data_cfg.get("val"))
    callbacks, best = _callbacks(cfg, checkpoint_dir, has_val, requeue_signal)
    trainer = pl.Trainer(
        **plain(cfg.trainer),
        default_root_dir=str(stage_dir),
        logger=_loggers(cfg, stage_dir) or False,
        callbacks=callbacks,
        plugins=_plugins(),
        use_distributed_sampler=False,  # covr's EpochSampler shards by rank itself (and resumes mid-epoch)
    )
    if resume:
        log.info("resuming from %s", resume)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
    trainer.save_checkpoint(checkpoint_dir / "last.ckpt")  # the final state, whatever the save schedule
    if trainer.global_rank == 0:
        best_path = best.best_model_path if best is not None else ""
        source = Path(best_path) if best_path else checkpoint_dir / "last.ckpt"
        atomic_torch_save(torch.load(source, map_location="cpu", weights_only=False), final)
        log.info("stage finished: %s (from %s)", final, source.name)
    trainer.strategy.barrier()
    return final


def train(cfg: DictConfig) -> dict[str, Any] | None:
    """All stages of the configured experiment, then (optionally) the test benchmarks."""
    validate_config(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(int(cfg.seed), workers=True)
    run_dir = Path(cfg.paths.run_dir)
    prepare_data(cfg.data)
    stages = _stage_configs(cfg)
    init_from = cfg.model.get("init_from")
    final: Path | None = None
    numbers = [int(s.model.stage) for s in stages]
    preemption = plain(cfg.get("preemption")) or {}
    with RequeueSignal(preemption.get("signals") or (), preemption.get("requeue", True)) as requeue_signal:
        for i, (stage_cfg, number) in enumerate(zip(stages, numbers)):
            name = f"stage{number}" if numbers.count(number) == 1 else f"stage{number}_{i}"
            stage_dir = run_dir if len(stages) == 1 else run_dir / name
            final = fit_stage(stage_cfg, stage_dir, init_from, requeue_signal)
            init_from = str(final)
            requeue_signal.exit_if_requested(_is_global_zero(), f"{name} is complete; the requeued job continues after it")
    if cfg.get("test_after_training") and cfg.get("test") and _is_global_zero():
        return test_checkpoint(cfg, final, run_dir)
    return None


def test_checkpoint(cfg: DictConfig, checkpoint: str | Path, out_dir: Path) -> dict[str, Any]:
    """Evaluate a covr checkpoint on `cfg.test` ({name: benchmark config}); results.json in out_dir."""
    validate_config(cfg)
    retriever = load_model(checkpoint).eval()  # any format: covr checkpoint or folder, LAVIS / CoVR file, hub id
    device = cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    results = evaluate_benchmarks(
        retriever.to(device),
        plain(cfg.test),
        out_dir,
        batch_size=int(cfg.get("test_batch_size", 32)),
        num_workers=int(cfg.data.get("num_workers", 4)) if cfg.get("data") else int(cfg.get("num_workers", 4)),
        mode=cfg.get("similarity", "mean"),
        cache_dir=Path(cfg.paths.cache_dir) / "galleries" if cfg.get("cache_galleries", True) else None,
        device=device,
    )
    _print_chance(results)
    print(f"results: {Path(out_dir) / 'results.json'}")
    return results


def _print_chance(results: dict[str, Any]) -> None:
    for name, r in results.items():
        gallery = r.get("counts", {}).get("gallery")
        if gallery:
            print(f"{name}: gallery of {gallery} videos, chance R@1 = {100.0 / gallery:.2f}%")


def _is_global_zero() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0

