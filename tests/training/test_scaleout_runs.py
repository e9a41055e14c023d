"""Real toy runs of train.py, each in subprocesses of its own (never several DDP runs in one pytest
process): a submitit_local two-job multirun, 2-process CPU DDP against 1 process with the same global
batch, and a run stopped by the checkpoint-and-requeue signal then resumed as the requeued job."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from covr.training.preemption import EXIT_REQUEUED
from helpers_training import REPO, SMALL_TOY

BASE = ["experiment=toy", "trainer.enable_progress_bar=false", "data.num_workers=0", *SMALL_TOY,
        "stages=null", "test_after_training=false", "trainer.log_every_n_steps=1"]  # fmt: skip
LR = 1e-3  # conf/experiment/toy.yaml


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """Toy data and target-embedding store shared by the runs of this module (written once, under locks)."""
    return tmp_path_factory.mktemp("scaleout")


def _env(shared: Path, runs: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(COVR_DATA=str(shared / "data"), COVR_CACHE=str(shared / "cache"), COVR_OUTPUT=str(runs),
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)  # fmt: skip
    return env


def _train(env: dict[str, str], *overrides: str, timeout: int = 400) -> str:
    run = subprocess.run([sys.executable, str(REPO / "train.py"), *BASE, *overrides], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"train.py failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    return run.stdout + run.stderr


def _state(path: Path) -> tuple[int, dict[str, torch.Tensor]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt["global_step"], ckpt["state_dict"]


def _losses(run_dir: Path) -> dict[int, float]:
    rows = csv.DictReader(open(run_dir / "logs" / "metrics.csv"))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_multirun(shared, tmp_path):
    env = _env(shared, tmp_path)
    cmd = [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
           *BASE, "model.stage=1", "trainer.max_steps=2", "run_id=sweep", "seed=1,2"]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    sweep = tmp_path / "toy" / "multirun_sweep"
    assert "Submitit 'local' sweep output dir" in run.stdout + run.stderr
    for job, seed in ((0, 1), (1, 2)):
        assert _state(sweep / str(job) / "checkpoints" / "last.ckpt")[0] == 2
        assert f"seed: {seed}" in (sweep / str(job) / ".hydra" / "config.yaml").read_text()
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # both ran as submitit jobs


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_with_the_same_global_batch(shared, tmp_path):
    """The 2-process run also checkpoints activations (exact: it must not change anything).
    Tolerance: losses to 1e-5 relative, weights to 5e-5 absolute (observed <= 2.2e-5 where a gradient
    is nearly zero, most <= 1e-6); attention key biases (whose exact gradient is 0: softmax ignores a
    shift, so AdamW normalises fp32 rounding noise) to steps x lr.
    The gates train at the plain lr here: at the default 100x, the gates' fast moves amplify the
    same rounding noise to ~1e-5 in X-Aligner weights within 4 steps (observed 1.3e-5), which
    would hide a real difference in the distributed computation this test is about."""
    env, steps = _env(shared, tmp_path), 4
    common = ["model.stage=2", f"trainer.max_steps={steps}", "optim.gate_lr_scale=1"]
    _train(env, *common, "trainer=cpu", "data.batch_size=32", "run_id=one")
    out = _train(env, *common, "trainer=ddp_cpu", "data.batch_size=16", "model.gradient_checkpointing=true", "run_id=two")
    assert "Starting with 2 processes" in out
    one, two = tmp_path / "toy" / "one", tmp_path / "toy" / "two"
    losses_one, losses_two = _losses(one), _losses(two)
    assert sorted(losses_one) == sorted(losses_two) == list(range(steps))
    for step in range(steps):
        assert losses_two[step] == pytest.approx(losses_one[step], rel=1e-5)
    (step_one, weights_one), (step_two, weights_two) = _state(one / "checkpoints" / "last.ckpt"), _state(two / "checkpoints" / "last.ckpt")
    assert step_one == step_two == steps and weights_one.keys() == weights_two.keys()
    for name, value in weights_one.items():
        atol = steps * LR if re.search(r"attention\.key\.bias$", name) else 5e-5  # AdamW: near-zero gradients, noisy steps
        torch.testing.assert_close(weights_two[name], value, rtol=0, atol=atol, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["cpu", "ddp_cpu"])
def test_requeue_signal_saves_and_the_requeued_job_resumes_exactly(shared, tmp_path, trainer):
    """The signal goes to one process (rank 0 under DDP): all ranks agree, save and exit, and the
    restarted job ends with the weights of an uninterrupted run (to 1e-6; observed: identical)."""
    steps = 12
    common = ["model.stage=2", f"trainer.max_steps={steps}", "data.batch_size=16", f"trainer={trainer}"]
    job = _env(shared, tmp_path, SLURM_JOB_ID="4242")  # the requeued job keeps its id, hence its run folder
    cmd = [sys.executable, str(REPO / "train.py"), *BASE, *common]
    process = subprocess.Popen(cmd, cwd=REPO, env=job, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    head = []
    for line in process.stdout:  # covr's progress log says so as fit starts
        head.append(line)
        if "[covr.training.progress]" in line:
            break
    os.kill(process.pid, signal.SIGUSR1)
    out = "".join(head) + process.communicate(timeout=400)[0]
    assert process.returncode == EXIT_REQUEUED, out[-5000:]
    run_dir = tmp_path / "toy" / "4242"
    saved = re.search(r"requeue signal: saved (\S+) at step (\d+)", out)
    assert saved and Path(saved.group(1)) == run_dir / "checkpoints" / "last.ckpt", out[-3000:]
    stopped_at = int(saved.group(2))
    assert 1 <= stopped_at < steps and _state(run_dir / "checkpoints" / "last.ckpt")[0] == stopped_at

    resumed = _train(job, *common)  # started again, as Slurm starts the requeued job
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in resumed
    _train(_env(shared, tmp_path), *common, "run_id=uninterrupted")
    final_step, final = _state(run_dir / "checkpoints" / "last.ckpt")
    reference_step, reference = _state(tmp_path / "toy" / "uninterrupted" / "checkpoints" / "last.ckpt")
    assert final_step == reference_step == steps
    for name, value in reference.items():
        torch.testing.assert_close(final[name], value, rtol=0, atol=1e-6, msg=name)
