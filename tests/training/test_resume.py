"""A killed run resumes from its last checkpoint and ends with exactly the weights, step count and
logged metrics of an uninterrupted run, wherever it was killed: first, middle or last batch of an
epoch, between epochs, at the very end, or stopped by the preemption signal. Nothing is lost on the
way: metrics.csv keeps its rows, stale temporaries are swept, a damaged last.ckpt falls back to the
newest readable checkpoint; checkpoints are written atomically, with the umask's permissions."""

from __future__ import annotations

import csv
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch

from covr.models.checkpoint_io import CheckpointError
from covr.training.checkpointing import atomic_torch_save, find_resume_checkpoint
from covr.training.preemption import EXIT_REQUEUED
from helpers_training import run_train

# one stage (X-Aligner + text encoder), 96 train rows in batches of 32: 3 steps per epoch, 2 epochs;
# last.ckpt after every step and at every epoch end
SHORT = ["stages=null", "model.stage=2", "trainer.max_epochs=2", "test_after_training=false", "data.toy.num_train=96",
         "data.batch_size=32", "checkpoint.every_n_train_steps=1", "trainer.log_every_n_steps=1"]  # fmt: skip
STEPS = 6
KILL = "+callbacks.kill._target_=covr.training.callbacks.KillAtStep"


def _checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """Toy data, embedding store and the uninterrupted reference run, shared by this module's runs."""
    root = tmp_path_factory.mktemp("resume")
    run_train(root, "run_id=uninterrupted", *SHORT)
    return root


def _metrics(run_dir: Path) -> list[tuple[int, str, float]]:
    """(step, metric, value) of every train/loss and val/R1 row of metrics.csv, in file order."""
    with open(run_dir / "logs" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [(int(r["step"]), key, float(r[key])) for r in rows for key in ("train/loss", "val/R1") if r.get(key)]


def _assert_same_as_uninterrupted(shared: Path, run_id: str) -> None:
    ref = _checkpoint(shared / "runs" / "toy" / "uninterrupted")
    got = _checkpoint(shared / "runs" / "toy" / run_id)
    logged, expected = _metrics(shared / "runs" / "toy" / run_id), _metrics(shared / "runs" / "toy" / "uninterrupted")
    assert [row[:2] for row in logged] == [row[:2] for row in expected], "every step's rows once, none lost to the kill"
    assert [row[2] for row in logged] == pytest.approx([row[2] for row in expected], abs=1e-5)
    assert (got["global_step"], got["epoch"]) == (ref["global_step"], ref["epoch"]) == (STEPS, 2)
    assert (shared / "runs" / "toy" / run_id / "checkpoints" / "final.ckpt").is_file()
    assert ref["state_dict"].keys() == got["state_dict"].keys()
    for name, value in ref["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][name], value, atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize(
    "step, at, saved, where",
    [
        (1, "batch_start", 1, "first batch of epoch 0"),
        (2, "batch_start", 2, "middle of epoch 0"),
        (3, "epoch_end", 2, "after epoch 0's last batch and validation, before its epoch-end save"),
        (3, "batch_start", 3, "between epochs, after the epoch-end save"),
        (6, "epoch_end", 5, "after the run's last batch, before the epoch-end save"),
    ],
)
def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_weights(shared, step, at, saved, where):
    """Step saves skip an epoch's last batch (the epoch-end save follows): a kill there resumes
    from the step before, so the epoch's validation is never skipped."""
    run_id = f"killed_{step}_{at}"
    killed = run_train(shared, f"run_id={run_id}", *SHORT, KILL, f"+callbacks.kill.step={step}", f"+callbacks.kill.at={at}", check=False)
    assert killed.returncode == 17, killed.stderr[-3000:]
    checkpoints = shared / "runs" / "toy" / run_id / "checkpoints"
    assert _checkpoint(checkpoints.parent)["global_step"] == saved, where
    stale = checkpoints / ".last.ckpt.k1l1ed.tmp"  # what a kill during a save leaves behind
    stale.write_bytes(b"partial")
    resumed = run_train(shared, f"run_id={run_id}", *SHORT)
    assert "resuming from" in resumed.stdout + resumed.stderr
    assert not stale.exists()
    _assert_same_as_uninterrupted(shared, run_id)


@pytest.mark.slow
@pytest.mark.parametrize("step", [2, 3])
def test_a_preempted_run_resumes_to_the_uninterrupted_weights(shared, step):
    """SIGUSR1 while step 2 (mid-epoch) or step 3 (the last batch of epoch 0, served after the epoch's
    validation) runs: saved at that step boundary, exit 75, nothing logged is lost."""
    run_id = f"preempted_{step}"
    signalled = run_train(shared, f"run_id={run_id}", *SHORT, "preemption.requeue=false",
                          "+callbacks.signal._target_=covr.training.callbacks.SignalAtStep", f"+callbacks.signal.step={step}", check=False)  # fmt: skip
    assert signalled.returncode == EXIT_REQUEUED, signalled.stderr[-3000:]
    assert _checkpoint(shared / "runs" / "toy" / run_id)["global_step"] == step
    run_train(shared, f"run_id={run_id}", *SHORT)
    _assert_same_as_uninterrupted(shared, run_id)


@pytest.mark.slow
def test_a_run_killed_mid_epoch_with_loader_workers_resumes_to_the_same_weights(shared):
    """The killed and resumed runs load batches in 2 worker processes (shared-memory slots,
    persistent workers, mid-epoch skip); the reference loads them in the main process."""
    workers = ["data.num_workers=2", "data.persistent_workers=true"]
    killed = run_train(shared, "run_id=workers", *SHORT, *workers, KILL, "+callbacks.kill.step=4", check=False)
    assert killed.returncode == 17, killed.stderr[-3000:]
    run_train(shared, "run_id=workers", *SHORT, *workers)
    _assert_same_as_uninterrupted(shared, "workers")


@pytest.mark.slow
def test_a_later_stage_resumes_with_the_earlier_stages_weights(tmp_path):
    """Killed in stage 1 of a two-stage run: the resumed stage builds its model from stage 0's
    final.ckpt again, so its frozen target path, hence the embedding stores it checks and uses, are
    those of the uninterrupted run (before: a random target path, fresh stores, other weights)."""
    stages = ("stages=[{model:{stage:0},loss:{beta:0.0,caption_weight:0.0},data:{target_source:frames},trainer:{max_epochs:1}},"
              "{model:{stage:1},trainer:{max_epochs:2}}]")  # fmt: skip
    two_stages = [stages, *SHORT[3:]]
    run_train(tmp_path, "run_id=uninterrupted", *two_stages)
    killed = run_train(tmp_path, "run_id=resumed", *two_stages, KILL, "+callbacks.kill.step=4", check=False)
    assert killed.returncode == 17, killed.stderr[-3000:]
    run_train(tmp_path, "run_id=resumed", *two_stages)
    ref = _checkpoint(tmp_path / "runs" / "toy" / "uninterrupted" / "stage1")
    got = _checkpoint(tmp_path / "runs" / "toy" / "resumed" / "stage1")
    assert got["global_step"] == ref["global_step"] == 6
    for name, value in ref["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][name], value, atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_a_damaged_last_checkpoint_falls_back_to_the_newest_readable_one(shared):
    """last.ckpt cut in half after a kill in epoch 1: the run resumes from best-*.ckpt (epoch 0's end)
    with a warning naming both, and still ends with the uninterrupted weights."""
    killed = run_train(shared, "run_id=damaged", *SHORT, KILL, "+callbacks.kill.step=5", check=False)
    assert killed.returncode == 17, killed.stderr[-3000:]
    checkpoints = shared / "runs" / "toy" / "damaged" / "checkpoints"
    last = checkpoints / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    best = next(checkpoints.glob("best-*.ckpt"))
    resumed = run_train(shared, "run_id=damaged", *SHORT)
    out = resumed.stdout + resumed.stderr
    assert f"{last} is not readable" in out and f"resuming from {best} instead" in out
    _assert_same_as_uninterrupted(shared, "damaged")


def test_resume_candidates_are_checked_before_use(tmp_path, caplog):
    checkpoints = tmp_path / "checkpoints"
    atomic_torch_save({"w": torch.ones(4)}, checkpoints / "best-step0000003.ckpt")
    atomic_torch_save({"w": torch.ones(4)}, checkpoints / "last.ckpt")
    assert find_resume_checkpoint(checkpoints) == checkpoints / "last.ckpt"  # last preferred when both are fine
    (checkpoints / "last.ckpt").write_bytes(b"PK\x03\x04 cut")
    with caplog.at_level(logging.WARNING):
        assert find_resume_checkpoint(checkpoints) == checkpoints / "best-step0000003.ckpt"
    assert "last.ckpt is not readable" in caplog.text
    (checkpoints / "best-step0000003.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint to resume from: .*last.ckpt .*best-step0000003.ckpt .*resume=null"):
        find_resume_checkpoint(checkpoints)
    assert find_resume_checkpoint(tmp_path / "new_run") is None


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_checkpoints_get_the_permissions_of_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_torch_save({"w": torch.ones(1)}, tmp_path / "last.ckpt")
        (tmp_path / "plain.txt").write_text("x")  # any other file the run writes
    finally:
        os.umask(previous)
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == 0o666 & ~umask == (tmp_path / "plain.txt").stat().st_mode & 0o777


class _Unpicklable:
    def __reduce__(self):
        raise pickle.PicklingError("boom")


def test_checkpoint_writes_are_atomic(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(pickle.PicklingError):
        atomic_torch_save({"step": 2, "w": torch.zeros(1000), "bad": _Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["step"] == 1  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind
