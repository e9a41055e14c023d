"""A killed run resumes from its last checkpoint and ends with exactly the weights of an
uninterrupted run; checkpoints are written atomically."""

from __future__ import annotations

import pickle

import pytest
import torch

from covr.training.checkpointing import atomic_torch_save
from helpers_training import run_train

# one stage (X-Aligner + text encoder) on the small toy set: 5 steps per epoch, 2 epochs
WORKERS = ["data.num_workers=2", "data.persistent_workers=true"]
ONE_STAGE = ["stages=null", "model.stage=2", "trainer.max_epochs=2", "test_after_training=false", "checkpoint.every_n_train_steps=3"]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    run_train(tmp_path, "run_id=uninterrupted", *ONE_STAGE)
    # the interrupted run loads its batches in 2 worker processes (shared-memory slots, persistent
    # workers, mid-epoch skip on resume); the reference loads them in the main process
    killed = run_train(
        tmp_path, "run_id=resumed", *ONE_STAGE, *WORKERS,
        "+callbacks.kill._target_=covr.training.callbacks.KillAtStep", "+callbacks.kill.step=7", check=False,
    )  # fmt: skip
    assert killed.returncode == 17, killed.stderr[-3000:]
    run_dir = tmp_path / "runs" / "toy" / "resumed"
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 6  # the step-3 schedule saved step 6; step 7 was lost with the process
    assert not (run_dir / "checkpoints" / "final.ckpt").exists()
    resumed = run_train(tmp_path, "run_id=resumed", *ONE_STAGE, *WORKERS)
    assert "resuming from" in resumed.stdout + resumed.stderr
    ref = _weights(tmp_path / "runs" / "toy" / "uninterrupted" / "checkpoints" / "last.ckpt")
    got = _weights(run_dir / "checkpoints" / "last.ckpt")
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 10
    assert ref.keys() == got.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-6, rtol=0, msg=name)


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
