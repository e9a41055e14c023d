"""Reading checkpoint files and loading state dicts with complete, readable key reports."""

from __future__ import annotations

import contextlib
import logging
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or does not fit the model."""


def read_checkpoint(path: str | Path) -> dict:
    """torch.load a checkpoint on CPU, safely (weights only) when the file allows it.

    Files that pickle Python objects beyond tensors (some released .ckpt files store their Hydra
    config) are loaded with full unpickling after a warning: only do this for files you trust."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        log.warning("checkpoint %s holds Python objects beyond tensors; loading it with full unpickling", path)
    except Exception as err:  # noqa: BLE001 - truncated zip, bad magic number, ...
        raise CheckpointError(f"checkpoint {path} is not a readable torch file (truncated or corrupt?): {_first_line(err)}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file here
        raise CheckpointError(f"checkpoint {path} is not a readable torch file (truncated or corrupt?): {_first_line(err)}") from None


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
