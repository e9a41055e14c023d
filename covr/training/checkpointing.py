"""Checkpoints that are never half-written, and finding the one to resume from."""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from covr.models.checkpoint_io import CheckpointError, read_checkpoint

log = logging.getLogger(__name__)

STALE_PATTERNS = (".*.ckpt.*.tmp", ".*.csv.*.tmp", ".*.csv.tmp")  # temporaries of atomic writes a kill left


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask would, briefly)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`.
    A run killed mid-write leaves the previous file intact (rename is atomic on POSIX). The file
    gets the permissions of any new file (0o666 less the umask), not mkstemp's owner-only 0o600,
    so teammates on a shared cluster can read checkpoints as they read the run's other files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes through `atomic_torch_save` and reads through covr's
    weights-only reader (full unpickling only by opt-in)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path)


class StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint with a step trigger that leaves an epoch's last batch to the epoch-end save.

    Lightning resumes a checkpoint saved on an epoch's last batch straight into the next epoch,
    without that epoch's validation: a kill during validation would lose its val R@1 row and its
    chance to be the best checkpoint. Without this save, such a kill resumes from the step before,
    redoes the last batch and validates."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def sweep_stale_temporaries(*folders: str | Path) -> int:
    """Delete temporaries of atomic writes that a killed run left in `folders` (at real size each
    partial checkpoint is gigabytes). Call before the run writes anything. Returns the count."""
    removed, size = 0, 0
    for folder in folders:
        for pattern in STALE_PATTERNS:
            for path in Path(folder).glob(pattern):
                try:
                    size += path.stat().st_size
                    path.unlink()
                    removed += 1
                except FileNotFoundError:  # another process of the run swept it first
                    pass
    if removed:
        log.info("removed %d temporary file(s) (%.1f MB) left by an interrupted write", removed, size / 2**20)
    return removed


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` cannot be resumed from (cut, not a zip archive, its pickle entry damaged), or None.
    Reads only the archive directory and the small pickle entry, whose CRC the zip reader checks."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
            if not pickles:
                return "no data.pkl entry: not a torch checkpoint"
            archive.read(pickles[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def find_resume_checkpoint(checkpoint_dir: str | Path, hpc_dir: str | Path | None = None) -> Path | None:
    """The newest readable checkpoint of the run: `last.ckpt` in its checkpoint folder or Lightning's
    Slurm auto-requeue checkpoints `hpc_ckpt_<n>.ckpt` in `hpc_dir` (the trainer's default_root_dir),
    else the newest `best-*.ckpt` (a full training state too, only older); None when there is none.

    A damaged file (a disk error, a file copied in part) is passed over for the next one with a
    warning naming both; when every candidate is damaged the run stops rather than start over
    from step 0. covr's own requeue handler writes last.ckpt (covr.training.preemption);
    hpc_ckpt files appear only when Lightning's SLURMEnvironment(auto_requeue=True) handled the signal."""
    checkpoint_dir = Path(checkpoint_dir)
    latest = [checkpoint_dir / "last.ckpt", *(sorted(Path(hpc_dir).glob("hpc_ckpt_*.ckpt")) if hpc_dir is not None else [])]

    def newest_first(paths: list[Path]) -> list[Path]:
        return sorted((p for p in paths if p.is_file()), key=lambda p: p.stat().st_mtime_ns, reverse=True)

    existing = newest_first(latest) + newest_first(sorted(checkpoint_dir.glob("best-*.ckpt")))
    damaged: list[tuple[Path, str]] = []
    for path in existing:
        problem = checkpoint_problem(path)
        if problem is None:
            if damaged:
                log.warning("%s is not readable (%s); resuming from %s instead", damaged[0][0], damaged[0][1], path)
            return path
        damaged.append((path, problem))
    if damaged:
        listed = "; ".join(f"{p} ({why})" for p, why in damaged)
        raise CheckpointError(f"no readable checkpoint to resume from: {listed}; pass resume=null to start this stage over, or resume=<path>")
    return None
