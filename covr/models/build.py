"""Factories: a retriever from a plain config dict, and from a covr checkpoint.

Config (conf/model/*.yaml, passed here as a plain dict; model code never imports Hydra):
    backbone: {family, weights, vision_weights, tokenizer, spec, image_size, attn_implementation, strict}
    query_head: xaligner | covr2
    xaligner: {num_blocks, width, num_heads, order, schedule, visual_memory, use_caption, init, ...}
    reference_frames: middle | all
    max_text_length: 32
    stage: 1 | 2
    text_encoder: null | [backbone parameter globs]   (stage 2; null = the backbone's default)
    init_from: null | a covr checkpoint whose weights initialise this model (stage 2 from stage 1)
    gradient_checkpointing: false | true (activation checkpointing of X-Aligner and trained layers)
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from covr.models.backbone import Backbone
from covr.models.blip2_loading import build_blip2_backbone
from covr.models.blip_loading import build_blip_random_backbone
from covr.models.checkpoint_io import CheckpointError, load_state, read_checkpoint, skip_weight_init
from covr.models.retriever import ComposedRetriever
from covr.models.xaligner import XAlignerConfig

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "covr"  # top-level key covr's Lightning checkpoints carry (config + vocabulary)
STATE_PREFIX = "model."  # the LightningModule holds the retriever as `self.model`


FAMILIES = ("blip2", "blip")


def build_backbone(cfg: Mapping[str, Any]) -> Backbone:
    """Backbone from its config: random init from `spec` when `weights` is null, else weights of any
    supported format (detected; see covr.models.loading), checked against `family`."""
    family = cfg.get("family", "blip2")
    if family not in FAMILIES:
        raise ValueError(f"unknown backbone family {family!r}; expected one of {', '.join(FAMILIES)}")
    if cfg.get("weights") is not None:
        from covr.models.loading import load_backbone_weights  # loading builds retrievers too

        return load_backbone_weights(cfg)
    if family == "blip":
        return build_blip_random_backbone(cfg)
    return build_blip2_backbone(cfg)


def build_retriever(cfg: Mapping[str, Any], backbone: Backbone | None = None) -> ComposedRetriever:
    """Build, optionally initialise from a covr checkpoint, and set the training stage."""
    cfg = copy.deepcopy(dict(cfg))
    backbone = backbone if backbone is not None else build_backbone(cfg["backbone"])
    model = ComposedRetriever(
        backbone,
        query_head=cfg.get("query_head", "xaligner"),
        xaligner=XAlignerConfig(**(cfg.get("xaligner") or {})),
        reference_frames=cfg.get("reference_frames", "middle"),
        max_text_length=int(cfg.get("max_text_length", 32)),
    )
    model.query_frames = dict(cfg["query_frames"]) if cfg.get("query_frames") else None  # recorded by training
    if cfg.get("init_from"):
        obj = read_checkpoint(cfg["init_from"])
        state = checkpoint_state(obj, cfg["init_from"])
        from_stage0 = obj[CHECKPOINT_KEY]["model_config"].get("stage") == 0
        if from_stage0:  # stage 0 never trains X-Aligner: keep this model's fresh one (any variant), or none
            state = {k: v for k, v in state.items() if not k.startswith("xaligner.")}
            state.update({f"xaligner.{k}": v for k, v in (model.xaligner.state_dict() if model.xaligner is not None else {}).items()})
        load_covr_weights(model, state, str(cfg["init_from"]))
        log.info("initialised weights from %s", cfg["init_from"])
        if from_stage0 and model.xaligner is not None:
            model.xaligner.init_projection(backbone.text_projection)  # start again from the adapted query head
    model.configure_stage(int(cfg.get("stage", 1)), cfg.get("text_encoder"))
    if cfg.get("gradient_checkpointing"):  # recompute activations in backward: same gradients, less memory
        model.set_gradient_checkpointing(True)
    return model


def checkpoint_payload(model: ComposedRetriever, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What covr stores beside the weights so a checkpoint rebuilds offline: the model config,
    the backbone's architecture spec and its vocabulary."""
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


def load_covr_weights(model: ComposedRetriever, state: Mapping[str, Tensor], source: str, strict: bool = True) -> None:
    """Load retriever weights, reconciling the frozen target-path copy: a checkpoint trained with one
    brings it; a stage-1 checkpoint has none, and its (frozen) backbone target path is the original."""
    has_copy = any(k.startswith("backbone.target_path.") for k in state)
    if has_copy and model.backbone.target_path is None:
        model.backbone.freeze_target_path()
    if not has_copy and model.backbone.target_path is not None:
        model.backbone.target_path = None
        load_state(model, state, source, strict)
        model.backbone.freeze_target_path()  # copy the loaded (original) target path
    else:
        load_state(model, state, source, strict)


def load_retriever(path: str | Path, stage: int | None = None, strict: bool = True) -> ComposedRetriever:
    """Rebuild a retriever from a covr checkpoint alone (no hub access): architecture and vocabulary
    come from the checkpoint, then its weights are loaded."""
    return retriever_from_checkpoint(read_checkpoint(path), str(path), stage, strict)


def retriever_from_checkpoint(obj: Mapping[str, Any], path: str, stage: int | None = None, strict: bool = True) -> ComposedRetriever:
    """`load_retriever` for an already-read checkpoint object."""
    cfg = checkpoint_build_config(obj, path)
    if stage is not None:
        cfg["stage"] = stage
    state = checkpoint_state(obj, str(path))
    with skip_weight_init() if strict else contextlib.nullcontext():  # a strict load sets every weight
        model = build_retriever(cfg)
    load_covr_weights(model, state, str(path), strict=strict)
    return model


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
