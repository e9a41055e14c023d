"""Bad videos under DDP: a 2-process CPU run whose rank 1 meets corrupt videos (and whose data has
a zero-byte video) completes with full batches on both ranks, also at one sample per rank; every
skipped row is listed once, with its reason, and counted in the run's summary."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from covr.data.collate import EpochSampler
from covr.data.toy import generate_toy_dataset
from covr.data.webvid_covr import WebVidCoVRDataset
from helpers_training import REPO

TOY = {"num_train": 48, "num_val": 8, "num_test": 8, "num_frames": 4}
SEED = 1234  # conf/train.yaml: the sampler's seed


def _prepare(root: Path, batch_size: int) -> tuple[set[int], set[int], set[int]]:
    """Toy data with one zero-byte video and the reference videos of rank 1's first batch of epoch 0
    overwritten with garbage. Returns (rows of the empty video, rows of the corrupt videos, rows rank
    1 draws in its first batch)."""
    toy = root / "data" / "toy"
    generate_toy_dataset(toy, **TOY)
    csv_path, videos = toy / "toy-covr_train.csv", toy / "videos"
    dataset = WebVidCoVRDataset(csv_path, videos, split="train", epoch_mode="all_triplets", target_source="frames")
    ann = dataset.annotations
    empty_id = ann.reference_id(int(dataset.rows[0]))
    (videos / f"{empty_id}.mp4").write_bytes(b"")
    dataset = WebVidCoVRDataset(csv_path, videos, split="train", epoch_mode="all_triplets", target_source="frames")
    sampler = EpochSampler(dataset, shuffle=True, seed=SEED, drop_last=True, num_replicas=2, rank=1)
    sampler.set_epoch(0)
    first_batch = [dataset.row_of(i, 0) for i in list(sampler)[:batch_size]]
    corrupt_ids = {ann.reference_id(r) for r in first_batch} - {empty_id}
    rng = np.random.default_rng(0)
    for video_id in corrupt_ids:
        (videos / f"{video_id}.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())

    def rows_of(ids: set[str]) -> set[int]:
        return {r for r in range(len(ann)) if ann.reference_id(r) in ids or ann.target_id(r) in ids}

    return rows_of({empty_id}), rows_of(corrupt_ids), {r for r in first_batch if ann.reference_id(r) in corrupt_ids}


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [4, 1])
def test_ddp_run_with_corrupt_and_empty_videos_completes_with_full_batches(tmp_path, batch_size):
    empty_rows, corrupt_rows, rank1_rows = _prepare(tmp_path, batch_size)
    assert rank1_rows, "rank 1's first batch must meet a corrupt video"
    env = dict(os.environ, COVR_DATA=str(tmp_path / "data"), COVR_CACHE=str(tmp_path / "cache"), COVR_OUTPUT=str(tmp_path / "runs"),
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")  # fmt: skip
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    overrides = [f"data.toy.{k}={v}" for k, v in TOY.items()] + [
        "experiment=toy", "stages=null", "model.stage=1", "trainer=ddp_cpu", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", f"data.batch_size={batch_size}", "data.target_source=frames", "data.num_target_frames=2",
        "data.val=null", "data.num_workers=0", "test_after_training=false", "run_id=bad",
    ]  # fmt: skip
    run = subprocess.run([sys.executable, str(REPO / "train.py"), *overrides], cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "ERROR opening" not in out  # decord's own stderr line is silenced; covr's one-line warning remains

    run_dir = tmp_path / "runs" / "toy" / "bad"
    with open(run_dir / "skipped_train.csv", newline="") as handle:
        listed = [(int(r["row"]), r["reason"]) for r in csv.DictReader(handle)]
    rows = [row for row, _ in listed]
    assert len(rows) == len(set(rows)), "a row is listed once per run, not once per epoch or per rank"
    assert {row for row, reason in listed if reason == "empty"} == empty_rows
    unreadable = {row for row, reason in listed if reason == "unreadable"}
    assert rank1_rows <= unreadable <= corrupt_rows
    summary = [line for line in out.splitlines() if "stage data: skipped" in line]
    assert summary and f"skipped {len(listed)} of" in summary[-1] and "unreadable" in summary[-1], summary

    kept = 48 - len(empty_rows)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2 * (kept // 2 // batch_size)  # every step ran with full batches on both ranks
