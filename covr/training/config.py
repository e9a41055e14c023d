"""OmegaConf resolvers the configs use, conversion of config nodes to plain containers, and the
scripts' outermost call (`run_script`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def _toy_vocabulary() -> list[str]:
    from covr.data.toy import toy_vocabulary

    return toy_vocabulary()


class MissingValueError(ValueError):
    """A `${required:...}` value that was not set."""


def _required(what: str) -> None:
    raise MissingValueError(f"missing a required value: {what}")


def slurm_job_id(environ: Mapping[str, str] | None = None) -> str | None:
    """`<array job>_<task>` for a Slurm array task, else SLURM_JOB_ID, else None (not in Slurm)."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def default_run_id(time_format: str = "%Y-%m-%d_%H-%M-%S", environ: Mapping[str, str] | None = None) -> str:
    """The Slurm job id inside a Slurm job, else the current time.

    A requeued Slurm job keeps its job id, so it lands in the same run folder and resumes there;
    every task of a multi-task (`srun`) job also agrees on the folder, which a timestamp would not
    guarantee."""
    return slurm_job_id(environ) or datetime.now().strftime(time_format)


def register_resolvers() -> None:
    """Resolvers:

    * `${toy_vocabulary:}` (the toy data's word list), `${toy_vocabulary_size:N}` (its size + N);
    * `${required:'what to pass'}`: fails with that message unless the key is set on the command line
      (OmegaConf's ??? cannot be used in experiment files, whose ??? never overrides a default);
    * `${job_id_or_now:FORMAT}`: `default_run_id`; cached, so every job of a Hydra multirun, and a
      requeued submitit job, keeps the value the launching process resolved;
    * `${cwd:}`: the launch directory (`${hydra:runtime.cwd}` cannot be used in paths that multirun
      launchers resolve before Hydra's config is set)."""
    if not OmegaConf.has_resolver("required"):
        OmegaConf.register_new_resolver("required", _required)
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd, use_cache=True)
    if not OmegaConf.has_resolver("job_id_or_now"):
        OmegaConf.register_new_resolver("job_id_or_now", lambda fmt="%Y-%m-%d_%H-%M-%S": default_run_id(fmt), use_cache=True)
    if not OmegaConf.has_resolver("toy_vocabulary"):
        OmegaConf.register_new_resolver("toy_vocabulary", _toy_vocabulary)
        OmegaConf.register_new_resolver("toy_vocabulary_size", lambda extra=0: len(_toy_vocabulary()) + int(extra))


def plain(node: Any) -> Any:
    """A resolved plain dict / list from a config node (model and data code never see OmegaConf)."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    return node


register_resolvers()


def run_script(main: Callable[[], Any]) -> None:
    """Call a script's Hydra `main`; a reader that stops early (`python train.py --help | head`)
    ends it quietly with status 1 instead of a BrokenPipeError traceback, also when the output is
    only flushed at exit."""
    try:
        try:
            main()
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        sys.exit(1)
