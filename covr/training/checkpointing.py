"""Checkpoints that are never half-written, and finding the one to resume from."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`.
    A run killed mid-write leaves the previous file intact (rename is atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes through `atomic_torch_save`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)


def find_resume_checkpoint(checkpoint_dir: str | Path, hpc_dir: str | Path | None = None) -> Path | None:
    """The newest of `last.ckpt` in the run's checkpoint folder and Lightning's Slurm auto-requeue
    checkpoints `hpc_ckpt_<n>.ckpt` in `hpc_dir` (the trainer's default_root_dir), if any exists.

    covr's own requeue handler writes last.ckpt (covr.training.preemption); hpc_ckpt files appear
    only when Lightning's SLURMEnvironment(auto_requeue=True) handled the signal instead."""
    candidates = [Path(checkpoint_dir) / "last.ckpt"]
    if hpc_dir is not None:
        candidates += sorted(Path(hpc_dir).glob("hpc_ckpt_*.ckpt"))
    existing = [p for p in candidates if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime_ns) if existing else None
