"""What `train.py` and `test.py` do around a run for the person at the terminal: mistakes end in
one or two lines that say what to set (not a traceback), a run that fails before writing anything
leaves no empty run folder behind, and known log noise is filtered here, in one place."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from covr.data.errors import CovrDataError
from covr.models.checkpoint_io import CheckpointError
from covr.training.config import MissingValueError
from covr.training.preflight import path_hints
from covr.training.validate import ConfigValueError

USER_ERRORS = (ConfigValueError, CheckpointError, CovrDataError, MissingValueError)
REQUIRED = {  # what a `???` key takes, for the error that names it
    "checkpoint": "checkpoint=PATH: a covr checkpoint (runs/<name>/<run_id>/[stageN/]checkpoints/final.ckpt) or model folder, "
    "a LAVIS / CoVR file or a hub id (README, \"Evaluation\")",
}


@contextlib.contextmanager
def entry_point(cfg: DictConfig, run_dir: str | Path | None = None) -> Iterator[None]:
    """Run the body of train.py / test.py: noise filtered; a mistake a user can fix (a config value,
    a missing file, a checkpoint) ends the command with exit status 2 and its message on stderr, plus
    a line saying which environment variable sets the folder it names; an empty run folder (only
    Hydra's .hydra/ and the log) is removed when the command fails, a kept one is named."""
    quiet_known_noise()
    try:
        yield
    except SystemExit:  # a requeue (75) or an explicit exit: not a failure to report here
        raise
    except BaseException as err:
        message = user_message(err)
        kept = _remove_if_empty(run_dir, cfg) is False
        if message is None:  # a bug or an interrupt: the traceback follows
            if kept:
                print(f"run folder: {run_dir}", file=sys.stderr)
            raise
        lines = [f"error: {message}", *path_hints(message, cfg)] + ([f"run folder: {run_dir}"] if kept else [])
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def user_message(err: BaseException) -> str | None:
    """The one-line message of a mistake a user can fix, or None for anything else."""
    if isinstance(err, MissingMandatoryValue):
        key = str(getattr(err, "full_key", "") or "")
        return f"missing a required value: {REQUIRED.get(key, key + '=...')}"
    if isinstance(err, USER_ERRORS):
        return str(err)
    return _missing_value(err)


def _missing_value(err: BaseException) -> str | None:
    """The message of a `${required:...}` value that was not set, found behind OmegaConf's wrapping."""
    seen = err
    while seen is not None:
        if isinstance(seen, MissingValueError):
            return str(seen)
        seen = seen.__context__
    return None


def _remove_if_empty(run_dir: str | Path | None, cfg: DictConfig) -> bool | None:
    """Remove `run_dir` if it holds nothing but Hydra's .hydra/ and the log file (and empty parents
    below paths.output_dir). True: removed; False: kept (it holds something); None: nothing to do."""
    if run_dir is None or not _is_rank_zero():
        return None
    folder = Path(run_dir)
    if not folder.is_dir():
        return None
    if any(entry.name != ".hydra" and not (entry.is_file() and entry.suffix == ".log") for entry in folder.iterdir()):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    try:
        stop = Path(str(cfg.paths.output_dir)).resolve()
    except Exception:  # paths unresolvable: the run folder alone goes
        return True
    parent = folder.resolve().parent
    while parent != stop and stop in parent.parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent
    return True


def _is_rank_zero() -> bool:
    """Not a second process of a multi-process run (which shares the folder)."""
    return all(os.environ.get(name, "0") in ("", "0") for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"))


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_known_noise() -> None:
    """Filter what every run would print without telling the user anything: Lightning's
    advertisement tips and its lines about accelerators covr does not use, and warnings about
    choices covr makes on purpose or about code outside it."""
    tips = _DropMessages("💡 Tip:", "TPU available", "HPU available")  # accelerators covr never uses, once per stage
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(tips)
    # frozen backbone parts stay in eval mode on purpose (covr.models.trainable)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # Lightning's pytree helper calls a torch API that torch 2.13 deprecates; nothing for a user to do
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
