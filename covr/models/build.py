"""Factories: a backbone or retriever from a plain config dict, from weights of any recognised
format, or from a covr checkpoint / model folder. Families are reached only through
covr.models.families.FAMILIES; files are read and recognised by covr.models.formats.

Config (conf/model/*.yaml, passed here as a plain dict; model code never imports Hydra):
    backbone: {family, weights, vision_weights, tokenizer, spec, image_size, attn_implementation, strict}
    query_head: xaligner | joint
    xaligner: {num_blocks, width, num_heads, order, schedule, visual_memory, use_caption, init, ...}
    reference_frames: middle | all
    max_text_length: 32
    stage: 1 | 2
    text_encoder: null | [backbone parameter globs]   (stage 2; null = the backbone's default)
    init_from: null | a covr checkpoint whose weights initialise this model (stage 2 from stage 1)
    gradient_checkpointing: false | true (activation checkpointing of X-Aligner and trained layers)
    uncertainty: null | {num_heads, ffn_ratio, hidden_ratio, dropout} (HUG's uncertainty heads, loss=hug)
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from covr.models.backbone import Backbone, WeightsOptions
from covr.models.checkpoint_io import CheckpointError, load_state, read_checkpoint, skip_weight_init
from covr.models.covr_checkpoint import checkpoint_build_config, checkpoint_state, trained_from_stage0
from covr.models.families import FAMILIES, get_family
from covr.models.folder import read_model_folder
from covr.models.formats import Source, check_family, inspect_source, unwrap_state
from covr.models.retriever import ComposedRetriever
from covr.models.tokenizer import build_tokenizer
from covr.models.uncertainty import UncertaintyConfig
from covr.models.xaligner import XAlignerConfig

log = logging.getLogger(__name__)

DEFAULT_TOKENIZER = "bert-base-uncased"  # LAVIS and CoVR files carry no vocabulary; both families use this one


def build_backbone(cfg: Mapping[str, Any]) -> Backbone:
    """Backbone from its config: random init from `spec` when `weights` is null, else weights of any
    supported format (detected; see `backbone_from_weights`), checked against `family`.

    Random init: `spec` (architecture, transformers field names), `tokenizer` (a vocabulary source:
    list, vocab.txt, folder, hub id), `image_size`, `seed`, `attn_implementation`."""
    family = get_family(cfg.get("family", "blip2"))
    if cfg.get("weights") is not None:
        return backbone_from_weights(cfg)
    if cfg.get("tokenizer") is None:
        raise ValueError("a randomly initialised backbone needs `tokenizer` (a vocabulary source)")
    spec = copy.deepcopy(dict(cfg.get("spec") or {}))
    if cfg.get("image_size") is not None:
        spec.setdefault("vision_config", {})["image_size"] = cfg["image_size"]
    tokenizer = build_tokenizer(cfg["tokenizer"], family.name)
    return family.random(spec, tokenizer, seed=cfg.get("seed"), attn_implementation=cfg.get("attn_implementation", "sdpa"))


def backbone_from_weights(cfg: Mapping[str, Any], source: Source | None = None) -> Backbone:
    """Backbone from `cfg["weights"]` in any supported format, checked against `cfg["family"]`.

    cfg keys (conf/model/backbone/*.yaml): family, weights, tokenizer, spec (what shapes cannot
    tell: heads, eps; and the run image size), image_size, vision_weights (BLIP-2 stage-1 files),
    attn_implementation (BLIP-2), strict. `source`: `cfg["weights"]` already inspected."""
    src = source if source is not None else inspect_source(cfg["weights"])
    check_family(src, cfg.get("family"))
    if src.kind == "covr_folder":
        return load_model_folder(src.location).backbone
    if src.kind == "covr_checkpoint":
        return retriever_from_checkpoint(src.obj, src.location).backbone
    family = FAMILIES[src.family]
    options = WeightsOptions(
        spec=copy.deepcopy(dict(cfg.get("spec") or {})),
        image_size=cfg.get("image_size"),
        attn_implementation=cfg.get("attn_implementation", "sdpa"),
        strict=cfg.get("strict", True),
        source=src.location,
    )
    tokenizer = build_tokenizer(cfg["tokenizer"], src.family) if cfg.get("tokenizer") is not None else None
    if src.kind == "transformers":
        return family.from_pretrained(src.location, tokenizer, options)
    state, layout = src.state, src.layout
    if layout == "covr retriever":  # its backbone, without the frozen target-path copy
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.") and not k.startswith("backbone.target_path.")}
        layout = family.key_layout(state)
    if cfg.get("vision_weights"):
        options.vision_state = unwrap_state(read_checkpoint(cfg["vision_weights"]))
    return family.from_state(state, layout, tokenizer if tokenizer is not None else _default_tokenizer(src), options)


def _default_tokenizer(src: Source):
    try:
        return build_tokenizer(DEFAULT_TOKENIZER, src.family)
    except OSError as err:
        first = (str(err).strip().splitlines() or ["not found"])[0][:160]
        raise CheckpointError(
            f"{src.location} carries no vocabulary and {DEFAULT_TOKENIZER} could not be loaded ({first}); "
            "pass tokenizer= a vocab.txt, a tokenizer folder or a hub id"
        ) from None


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
        uncertainty=UncertaintyConfig(**cfg["uncertainty"]) if cfg.get("uncertainty") else None,
    )
    model.query_frames = dict(cfg["query_frames"]) if cfg.get("query_frames") else None  # recorded by training
    if cfg.get("init_from"):
        obj = read_checkpoint(cfg["init_from"])
        state = checkpoint_state(obj, cfg["init_from"])
        from_stage0 = trained_from_stage0(obj)
        if from_stage0:  # stage 0 never trains X-Aligner: keep this model's fresh one (any variant), or none
            state = {k: v for k, v in state.items() if not k.startswith("xaligner.")}
            state.update({f"xaligner.{k}": v for k, v in (model.xaligner.state_dict() if model.xaligner is not None else {}).items()})
        state = _with_own_uncertainty_heads(model, state, from_stage0, str(cfg["init_from"]))
        load_covr_weights(model, state, str(cfg["init_from"]))
        log.info("initialised weights from %s", cfg["init_from"])
        if from_stage0 and model.xaligner is not None:
            model.xaligner.init_projection(backbone.text_projection)  # start again from the adapted query head
    model.configure_stage(int(cfg.get("stage", 1)), cfg.get("text_encoder"))
    if cfg.get("gradient_checkpointing"):  # recompute activations in backward: same gradients, less memory
        model.set_gradient_checkpointing(True)
    return model


def _with_own_uncertainty_heads(model: ComposedRetriever, state: dict[str, Tensor], from_stage0: bool, source: str) -> dict[str, Tensor]:
    """HUG's uncertainty heads when initialising from a checkpoint: a stage-0 checkpoint never trains
    them and one trained without loss=hug has none, so this model keeps its fresh heads (and a model
    without heads drops the checkpoint's)."""
    theirs = any(k.startswith("uncertainty.") for k in state)
    if model.uncertainty is None or from_stage0 or not theirs:
        state = {k: v for k, v in state.items() if not k.startswith("uncertainty.")}
        if model.uncertainty is not None:
            state.update({f"uncertainty.{k}": v for k, v in model.uncertainty.state_dict().items()})
            if not theirs:
                log.info("%s has no uncertainty heads: this model's start freshly initialised", source)
    return state


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


def load_model_folder(path: str | Path, strict: bool = True) -> ComposedRetriever:
    """Rebuild a retriever from a covr model folder, offline (eval mode)."""
    cfg, state, weights = read_model_folder(path)
    model = build_retriever(cfg)
    load_covr_weights(model, state, weights, strict)
    return model.eval()
