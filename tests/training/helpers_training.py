"""Shared pieces of the training tests: a small toy dataset and the command line that trains on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SMALL_TOY = ["data.toy.num_train=320", "data.toy.num_val=30", "data.toy.num_test=40", "data.toy.num_frames=8"]


def env_for(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        COVR_DATA=str(tmp / "data"), COVR_CACHE=str(tmp / "cache"), COVR_OUTPUT=str(tmp / "runs"),
        HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",  # tiny models: one thread is several times faster than two fighting
    )  # fmt: skip
    return env


def run_train(tmp: Path, *overrides: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """`python train.py experiment=toy <overrides>` in a subprocess, data/cache/runs under tmp."""
    cmd = [sys.executable, str(REPO / "train.py"), "experiment=toy", "trainer.enable_progress_bar=false", "data.num_workers=0", *SMALL_TOY, *overrides]
    run = subprocess.run(cmd, cwd=REPO, env=env_for(tmp), capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        raise AssertionError(f"train.py failed ({run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-6000:]}")
    return run
