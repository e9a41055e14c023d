"""The learning-rate schedule fits the run: every real experiment, composed with the README's
multi-GPU overrides on a WebVid-CoVR-sized train set (131,000 unique targets) through the real
data module, warms up for a small share of its steps and reaches its peak learning rate; a
warm-up over half of the run fails before training, in one line; transformers' schedule follows
the warm-up + cosine formula."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import covr.training.config  # noqa: F401  (resolvers)
from covr.data.embedding_store import EmbeddingStore
from covr.training.config import plain
from covr.training.datamodule import CoVRDataModule
from covr.training.optim import Schedule, ScheduleError, cosine_with_warmup, plan_schedule, steps_per_run
from covr.training.run import _stage_configs
from covr.training.schedule import check_schedules, count_train_items, plan_from_config, world_size
from helpers_training import REPO

TARGETS = 131_000  # WebVid-CoVR train: ~131k unique target videos, one triplet of each per epoch
REAL = ["covr2_blip2", "xaligner_blip2_stage1", "xaligner_blip2_stage2", "covr_blip", "xaligner_blip_stage1", "xaligner_blip_stage2"]
# README, "Scale-out": one node with 8 GPUs, or two Slurm nodes x 4 GPUs (COVR_SLURM_GPUS_PER_NODE=4)
MULTI_GPU = {"ddp8": (["trainer=ddp", "trainer.devices=8"], {}), "slurm2x4": (["trainer=ddp_multinode"], {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "4"})}


@pytest.fixture(scope="module")
def webvid_sized(tmp_path_factory) -> dict[str, Path]:
    """A train CSV with 131,000 unique targets (every 4th with a second triplet), their target
    embeddings in a store (1 frame x 1 value each), and the one reference video file they share
    (never decoded: only its presence is checked)."""
    root = tmp_path_factory.mktemp("webvid_sized")
    (root / "videos" / "ref").mkdir(parents=True)
    (root / "videos" / "ref" / "r0.mp4").write_bytes(b"\0" * 16)
    ids = [f"page{i // 1000}/v{i}" for i in range(TARGETS)]
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pth1", "pth2", "edit", "txt1", "txt2"])
        for i, target in enumerate(ids):
            for _ in range(1 + (i % 4 == 0)):
                writer.writerow(["ref/r0", target, "make it red", "a video", "a red video"])
    store = EmbeddingStore.create(root / "store", ids, "synthetic", (1,), max_frames=1, dtype="float16")
    store.writer(0).write(np.arange(TARGETS), np.zeros((TARGETS, 1, 1), dtype=np.float16), np.ones(TARGETS))
    return {"csv": root / "train.csv", "videos": root / "videos", "store": root / "store"}


def _compose(tmp: Path, data: dict[str, Path], experiment: str, *overrides: str):
    paths = [f"paths.root={tmp}", f"paths.run_dir={tmp}/run", f"data.train.csv={data['csv']}", f"data.train.video_root={data['videos']}",
             f"data.train.store={data['store']}", "data.val=null"]  # fmt: skip
    extra = ["model.init_from=unused.ckpt"] if experiment.endswith("stage2") else []
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*paths, f"experiment={experiment}", *extra, *overrides])


def _reference_schedule(epochs: int, per_gpu_batch: int, fraction: float, gpus: int = 8) -> tuple[int, int]:
    """(total, warm-up) written out: epochs x drop_last batches of per_gpu_batch per GPU."""
    total = epochs * (TARGETS // gpus // per_gpu_batch)
    return total, math.floor(fraction * total + 0.5)


@pytest.mark.parametrize("trainer", sorted(MULTI_GPU))
@pytest.mark.parametrize("experiment", REAL)
def test_recipe_schedules_at_8_gpus(experiment, trainer, webvid_sized, tmp_path, monkeypatch):
    overrides, env = MULTI_GPU[trainer]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    batch = 512 if "blip" in experiment.split("_") else 256  # the recipes' per-GPU batches (CoVR-BLIP 512, CoVR-2 256)
    cfg = _compose(tmp_path, webvid_sized, experiment, *overrides, f"data.batch_size={batch}")
    (stage,) = _stage_configs(cfg)
    processes = world_size(plain(stage.trainer))
    assert processes == 8
    # the data module the run would train from, as CoVRModule._total_steps counts it
    datamodule = CoVRDataModule(plain(stage.data), image_size=224, store_identity="synthetic", report_dir=tmp_path)
    batches = datamodule.train_batches_per_epoch(processes)
    trainer_cfg = plain(stage.trainer)
    total = steps_per_run(batches, trainer_cfg["max_epochs"], trainer_cfg["max_steps"], trainer_cfg["limit_train_batches"], trainer_cfg["accumulate_grad_batches"])
    schedule = plan_schedule(plain(stage.optim), total)
    fraction = float(stage.optim.warmup_fraction)
    assert stage.optim.warmup_steps is None  # real experiments size their warm-up by the run
    assert (schedule.total_steps, schedule.warmup_steps) == _reference_schedule(int(stage.trainer.max_epochs), batch, fraction)
    assert schedule.warmup_steps <= 0.1 * schedule.total_steps
    # the pre-training check plans the same schedule from the config and the CSV alone
    assert plan_from_config(stage, count_train_items(webvid_sized["csv"]), processes)[0] == schedule
    check_schedules([stage])
    # the learning rate reaches each group's peak at the end of the warm-up, then decays to ~0
    lrs = _lrs(schedule, peak=float(stage.optim.lr))
    assert max(lrs) == pytest.approx(float(stage.optim.lr), rel=1e-12) and int(np.argmax(lrs)) == schedule.warmup_steps
    assert lrs[-1] < 0.01 * float(stage.optim.lr)


def test_the_former_absolute_warmups_fail_before_training(webvid_sized, tmp_path):
    """Stage 1's former 500 warm-up steps at 8 GPUs x 256: 189 steps in all, the warm-up never ends."""
    cfg = _compose(tmp_path, webvid_sized, "xaligner_blip2_stage1", "trainer=ddp", "trainer.devices=8", "optim.warmup_steps=500")
    with pytest.raises(ScheduleError) as error:
        check_schedules(_stage_configs(cfg))
    message = str(error.value)
    assert "\n" not in message
    assert "stage 1: optim.warmup_steps=500 covers more than half of the run's 189 optimiser steps" in message
    assert "3 epochs x 63 batches; 131,000 train items / (8 processes x batch 256)" in message


def test_warmup_share_and_rounding():
    assert plan_schedule({"warmup_fraction": 0.05}, 189) == Schedule(189, 9)  # 9.45 -> 9
    assert plan_schedule({"warmup_fraction": 0.05}, 190) == Schedule(190, 10)  # 9.5 -> 10 (half up)
    assert plan_schedule({"warmup_fraction": 0.05, "warmup_steps": 3}, 189).warmup_steps == 3  # absolute wins
    assert plan_schedule({"warmup_fraction": 0.05}, 1).warmup_steps == 0  # fast_dev_run: no warm-up
    assert plan_schedule({"warmup_steps": 50}, 100).warmup_steps == 50  # exactly half is allowed
    with pytest.raises(ScheduleError, match="warmup_steps=51 covers more than half of the run's 100 optimiser steps"):
        plan_schedule({"warmup_steps": 51}, 100)
    with pytest.raises(ScheduleError, match=r"warmup_fraction=0.6 \(60 steps\) covers more than half"):
        plan_schedule({"warmup_fraction": 0.6}, 100)


def test_steps_per_run_counts_as_lightning():
    assert steps_per_run(63, max_epochs=3) == 189
    assert steps_per_run(63, max_epochs=3, max_steps=100) == 100  # whichever ends first
    assert steps_per_run(63, max_epochs=3, max_steps=1000) == 189
    assert steps_per_run(63, max_epochs=3, limit_train_batches=10) == 30  # an int is a batch count
    assert steps_per_run(63, max_epochs=2, limit_train_batches=0.5) == 62  # a float is a share: int(31.5)
    assert steps_per_run(63, max_epochs=2, accumulate=4) == 32  # ceil(63 / 4) per epoch
    assert steps_per_run(63, max_epochs=-1, max_steps=7) == 7


def _lrs(schedule: Schedule, peak: float) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = cosine_with_warmup(optimizer, schedule)
    lrs = []
    for _ in range(schedule.total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("total, warmup, floor", [(189, 9, 0.0), (100, 0, 0.0), (50, 5, 0.1), (30, 0, 1.0)])
def test_transformers_schedule_equals_the_formula(total, warmup, floor):
    """Step s: peak x s / W during the warm-up, then peak x (r + (1 - r)(1 + cos(pi (s - W) / (T - W))) / 2)."""
    peak = 3e-4
    expected = [
        peak * s / warmup if s < warmup else peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
        for s in range(total)
    ]
    np.testing.assert_allclose(_lrs(Schedule(total, warmup, floor), peak), expected, rtol=1e-12, atol=1e-18)
