"""Reading checkpoint files and loading state dicts with complete, readable key reports."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import pickle
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or does not fit the model."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint that only full unpickling could read, refused because nobody opted in."""


TRUST_ENV = "COVR_TRUST_CHECKPOINTS"  # "1" trusts every checkpoint file for the whole process
TRUST_HINT = "trust_checkpoint=true (train.py / test.py), --trust-checkpoint (tools), covr.load(..., trust_checkpoint=True) or COVR_TRUST_CHECKPOINTS=1"
_trusted: contextvars.ContextVar[bool] = contextvars.ContextVar("covr_trust_checkpoints", default=False)


def _safe_globals() -> list:
    """Types that torch's weights-only unpickler may rebuild beyond tensors and containers: what
    Lightning and LAVIS / CoVR files hold besides weights (OmegaConf configs in hyper-parameters,
    argparse namespaces, paths). None of them runs code when unpickled."""
    import argparse
    import collections
    import pathlib
    import typing

    safe: list = [argparse.Namespace, collections.defaultdict, typing.Any, pathlib.PosixPath, pathlib.PurePosixPath,
                  pathlib.WindowsPath, pathlib.PureWindowsPath, int, float, bool, str, dict, list, tuple, set]  # fmt: skip
    try:
        from omegaconf import DictConfig, ListConfig, base, nodes

        safe += [DictConfig, ListConfig, base.Metadata, base.ContainerMetadata]
        safe += [nodes.AnyNode, nodes.StringNode, nodes.IntegerNode, nodes.FloatNode, nodes.BooleanNode, nodes.BytesNode, nodes.PathNode]
    except ImportError:  # omegaconf is a dependency of hydra-core; model-only installs may lack it
        pass
    return [t for t in safe if t is not None]


def checkpoints_trusted() -> bool:
    """Whether full unpickling is allowed here (``trust_checkpoints`` context or COVR_TRUST_CHECKPOINTS=1)."""
    return _trusted.get() or os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


@contextlib.contextmanager
def trust_checkpoints(enabled: bool = True) -> Iterator[None]:
    """Within this context, checkpoint files that need full unpickling are loaded (``enabled``)."""
    token = _trusted.set(bool(enabled) or _trusted.get())
    try:
        yield
    finally:
        _trusted.reset(token)


def read_checkpoint(path: str | Path, trust: bool | None = None) -> dict:
    """torch.load a checkpoint on CPU with weights_only=True (tensors, containers, numbers, strings
    and the few types of ``_safe_globals``). A file that references anything else (a class, a
    function: what a ``__reduce__`` payload runs) is refused with UntrustedCheckpointError unless
    ``trust`` (default: ``checkpoints_trusted()``) opts in to full unpickling."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _unsafe_globals(err)
        if not unsafe:
            raise CheckpointError(f"checkpoint {path} is not a readable torch file (truncated or corrupt?): {_unpickling_reason(err)}") from None
    except Exception as err:  # noqa: BLE001 - truncated zip, bad magic number, ...
        raise CheckpointError(f"checkpoint {path} is not a readable torch file (truncated or corrupt?): {_first_line(err)}") from None
    if not (checkpoints_trusted() if trust is None else trust):
        raise UntrustedCheckpointError(
            f"checkpoint {path} references {', '.join(unsafe)}, which only full unpickling can load, and full unpickling "
            f"runs any code the file carries; if you trust this file, opt in with {TRUST_HINT}"
        )
    log.warning("checkpoint %s: full unpickling (trusted by opt-in) for %s", path, ", ".join(unsafe))
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file here
        raise CheckpointError(f"checkpoint {path} is not a readable torch file (truncated or corrupt?): {_first_line(err)}") from None


_GLOBAL = re.compile(r"(?:[Uu]nsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")


def _unsafe_globals(err: BaseException) -> list[str]:
    """The names torch's weights-only unpickler refused ("Unsupported global: GLOBAL posix.system");
    empty when it failed for another reason (random bytes, a cut file)."""
    return sorted(set(_GLOBAL.findall(str(err))))


def _unpickling_reason(err: BaseException) -> str:
    match = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(err))
    return match.group(1).strip()[:200] if match else _first_line(err)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else type(err).__name__


def strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Remove `prefix` from every key that has it (e.g. DDP's 'module.')."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def _listing(keys: Iterable[str], limit: int = 25) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def skip_weight_init() -> contextlib.AbstractContextManager:
    """A context that builds modules without their random initialisation (torch.nn.init and
    transformers' init_weights become no-ops), for models whose weights are loaded right after:
    a BLIP-2 ViT-g initialises for tens of seconds on a CPU, then every value is overwritten.
    Parameters hold uninitialised memory until loaded: pair it with a strict ``load_state``, or
    initialise what the load leaves out (``load_state`` returns those keys)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # an older transformers: build normally
        return contextlib.nullcontext()
    return no_init_weights()


def initialise_left_out(model: nn.Module, keys: Iterable[str]) -> None:
    """Run a transformers model's own init on the modules owning ``keys`` (tensors a load left
    unset in a model built under ``skip_weight_init``)."""
    owners = {key.rsplit(".", 1)[0] for key in keys}
    for name in sorted(owners):
        model._init_weights(model.get_submodule(name))


def load_state(
    module: nn.Module, state: Mapping[str, Tensor], source: str, strict: bool = True, optional: tuple[str, ...] = ()
) -> list[str]:
    """Load `state` into `module`, checking names and shapes ourselves so that every problem is listed.

    strict=True raises `CheckpointError` naming the missing, unexpected and mis-shaped keys;
    strict=False logs them and loads what fits. Missing keys under an `optional` prefix (e.g. the
    ITM head, which CoVR checkpoints leave out and retrieval never uses) keep their initial values,
    with a logged note. Returns the module's keys that were not loaded."""
    expected = module.state_dict()
    absent_optional = [k for k in expected if k not in state and k.startswith(optional)] if optional else []
    if absent_optional:
        log.info("%s has no %s: left at initialisation (retrieval does not use it)", source, ", ".join(sorted({k.rsplit(".", 1)[0] + ".*" for k in absent_optional})))
    missing = [k for k in expected if k not in state and k not in absent_optional]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_listing(unexpected)}")
    if mis_shaped:
        problems.append(f"wrong shape {len(mis_shaped)}: {_listing(mis_shaped)}")
    if problems and strict:
        raise CheckpointError(f"{source} does not fit the model; " + "; ".join(problems) + " (strict=False loads the rest)")
    if problems:
        log.warning("%s: loading with strict=False; %s", source, "; ".join(problems))
    bad = {s.split(" ")[0] for s in mis_shaped}
    usable = {k: v for k, v in state.items() if k in expected and k not in bad}
    module.load_state_dict(usable, strict=False)
    return [k for k in expected if k not in usable]
