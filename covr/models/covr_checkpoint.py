"""covr's (Lightning) checkpoint format: what it stores beside the weights, and reading it back.

    {"covr": {"model_config", "family", "spec", "vocab"},      written by the training module
     "state_dict": {"model.<retriever key>": tensor, ...}, ...}  Lightning's own entries

Reads and writes plain data only: building the retriever it describes is covr.models.build's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from covr.models.checkpoint_io import CheckpointError

CHECKPOINT_KEY = "covr"  # top-level key covr's Lightning checkpoints carry (config + vocabulary)
STATE_PREFIX = "model."  # the LightningModule holds the retriever as `self.model`


def checkpoint_payload(model: nn.Module, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What covr stores beside the weights so a checkpoint rebuilds offline: the model config,
    the backbone's architecture spec and its vocabulary. model: a ComposedRetriever."""
    vocab = model.backbone.tokenizer.get_vocab()
    return {
        "model_config": copy.deepcopy(dict(cfg)),
        "family": model.backbone.family,
        "spec": model.backbone.spec,
        "vocab": [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])],
    }


def checkpoint_state(obj: Mapping[str, Any], source: str) -> dict[str, Tensor]:
    """The retriever's weights from a covr (Lightning) checkpoint."""
    if CHECKPOINT_KEY not in obj or "state_dict" not in obj:
        raise CheckpointError(f"{source} is not a covr checkpoint (no '{CHECKPOINT_KEY}' and 'state_dict' entries)")
    return {k[len(STATE_PREFIX):]: v for k, v in obj["state_dict"].items() if k.startswith(STATE_PREFIX)}


def checkpoint_build_config(obj: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The retriever config a covr checkpoint rebuilds from: its model config with a weightless
    backbone of the stored architecture and vocabulary (the checkpoint's weights are loaded after)."""
    if CHECKPOINT_KEY not in obj:
        raise CheckpointError(f"{path} is not a covr checkpoint (no '{CHECKPOINT_KEY}' entry)")
    meta = obj[CHECKPOINT_KEY]
    cfg = copy.deepcopy(meta["model_config"])
    cfg["backbone"] = {
        "family": meta["family"],
        "weights": None,
        "spec": meta["spec"],
        "tokenizer": meta["vocab"],
        "attn_implementation": cfg.get("backbone", {}).get("attn_implementation", "sdpa"),
    }
    cfg["init_from"] = None
    return cfg


def trained_from_stage0(obj: Mapping[str, Any]) -> bool:
    """Whether a covr checkpoint is a stage-0 (backbone adaptation) result, which never trains X-Aligner."""
    return obj[CHECKPOINT_KEY]["model_config"].get("stage") == 0
