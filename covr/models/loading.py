"""One loader for every weights format, detected automatically (see covr.models.formats).

    load_model(source, ...)        -> ComposedRetriever   (the inference API and the conversion tool)
    load_backbone_weights(cfg)     -> Backbone            (build_backbone when `weights` is set)

Backbone-only sources (transformers, LAVIS, CoVR / CoVR-2 files) give a retriever with the
family's own composed query (`query_head: covr2`), which is also what an untrained X-Aligner
returns. covr folders and checkpoints rebuild exactly the retriever that was saved.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from covr.models.backbone import Backbone
from covr.models.blip2_loading import backbone_from_blip2_state, backbone_from_lavis_state, backbone_from_pretrained
from covr.models.blip_loading import blip_backbone_from_pretrained, blip_backbone_from_state
from covr.models.build import build_retriever, load_covr_weights, retriever_from_checkpoint
from covr.models.checkpoint_io import CheckpointError, read_checkpoint
from covr.models.folder import load_model_folder
from covr.models.formats import Source, check_family, inspect_source
from covr.models.retriever import ComposedRetriever
from covr.models.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

DEFAULT_TOKENIZER = "bert-base-uncased"  # LAVIS and CoVR files carry no vocabulary; both families use this one
MAX_TEXT_LENGTH = {"blip2": 32, "blip": 35}  # CoVR-2 / CoVR training lengths


def load_backbone_weights(cfg: Mapping[str, Any], source: Source | None = None) -> Backbone:
    """Backbone from `cfg["weights"]` in any supported format, checked against `cfg["family"]`.

    cfg keys (conf/model/backbone/*.yaml): family, weights, tokenizer, spec (what shapes cannot
    tell: heads, eps; and the run image size), image_size, vision_weights (BLIP-2 stage-1 files),
    attn_implementation (BLIP-2), strict."""
    src = source if source is not None else inspect_source(cfg["weights"])
    check_family(src, cfg.get("family"))
    if src.kind == "covr_folder":
        return load_model_folder(src.location).backbone
    if src.kind == "covr_checkpoint":
        return retriever_from_checkpoint(src.obj, src.location).backbone
    spec = copy.deepcopy(dict(cfg.get("spec") or {}))
    image_size, strict = cfg.get("image_size"), cfg.get("strict", True)
    attn = cfg.get("attn_implementation", "sdpa")
    tokenizer = build_tokenizer(cfg["tokenizer"], src.family) if cfg.get("tokenizer") is not None else None
    if src.kind == "transformers":
        if src.family == "blip":
            return blip_backbone_from_pretrained(src.location, tokenizer, image_size)
        return backbone_from_pretrained(src.location, tokenizer, image_size, attn, spec.get("post_layernorm_eps"))
    state, layout = src.state, src.layout
    if layout == "covr retriever":
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.") and not k.startswith("backbone.target_path.")}
        layout = "transformers BLIP-2" if src.family == "blip2" else "transformers BLIP"
    tokenizer = tokenizer if tokenizer is not None else _default_tokenizer(src)
    if layout == "LAVIS BLIP-2":
        vision = cfg.get("vision_weights")
        vision_state = read_checkpoint(vision) if vision else None
        return backbone_from_lavis_state(state, tokenizer, spec, vision_state, image_size, attn, strict, src.location)
    if layout == "transformers BLIP-2":
        return backbone_from_blip2_state(state, tokenizer, spec, image_size, attn, strict, src.location)
    return blip_backbone_from_state(state, tokenizer, spec, image_size, strict, src.location)


def _default_tokenizer(src: Source):
    try:
        return build_tokenizer(DEFAULT_TOKENIZER, src.family)
    except OSError as err:
        first = (str(err).strip().splitlines() or ["not found"])[0][:160]
        raise CheckpointError(
            f"{src.location} carries no vocabulary and {DEFAULT_TOKENIZER} could not be loaded ({first}); "
            "pass tokenizer= a vocab.txt, a tokenizer folder or a hub id"
        ) from None


def load_model(
    source: str | Path | Source,
    family: str | None = None,
    config: Mapping[str, Any] | None = None,
    query_head: str | None = None,
    image_size: int | None = None,
    tokenizer: Any = None,
    spec: Mapping[str, Any] | None = None,
    vision_weights: str | None = None,
    strict: bool = True,
) -> ComposedRetriever:
    """A retriever (eval mode) from any supported source: a covr model folder or checkpoint, a
    transformers folder or hub id, a LAVIS / CoVR / CoVR-2 file or a bare state dict.

    family: fail unless the weights are of this family ("blip2" | "blip"); config: a retriever
    config (build_retriever format) for backbone-only sources or bare covr state dicts; query_head:
    shortcut for config's head (default "covr2"); image_size / tokenizer / spec / vision_weights /
    strict: as in the backbone config. `source` may be an already inspected `Source`."""
    src = source if isinstance(source, Source) else inspect_source(source)
    check_family(src, family)
    if src.kind in ("covr_folder", "covr_checkpoint"):
        model = load_model_folder(src.location, strict) if src.kind == "covr_folder" else retriever_from_checkpoint(src.obj, src.location, strict=strict)
        if image_size is not None and image_size != model.image_size:
            raise ValueError(f"{src.location} runs at {model.image_size} px; convert it again with image_size={image_size} to change that")
        return model.eval()
    has_head = any(k.startswith("xaligner.") for k in src.state)
    if has_head and config is None:
        raise CheckpointError(f"{src.location} is a covr retriever state dict without its config; expected config= (a retriever config) with it, or the covr model folder or checkpoint it came from")
    given = dict((config or {}).get("backbone") or {})  # a config's own backbone entry fills what is not passed
    backbone_cfg = {
        "family": src.family, "weights": src.location, "strict": strict,
        "tokenizer": tokenizer if tokenizer is not None else given.get("tokenizer"),
        "spec": dict(spec if spec is not None else given.get("spec") or {}),
        "image_size": image_size if image_size is not None else given.get("image_size"),
        "vision_weights": vision_weights if vision_weights is not None else given.get("vision_weights"),
    }  # fmt: skip
    backbone = load_backbone_weights(backbone_cfg, src)
    head = query_head or "covr2"
    cfg = copy.deepcopy(dict(config)) if config is not None else {"query_head": head, "max_text_length": MAX_TEXT_LENGTH[src.family]}
    cfg.setdefault("stage", 2 if cfg.get("query_head", "xaligner") == "covr2" else 1)
    cfg["init_from"] = None
    model = build_retriever(cfg, backbone=backbone)
    if src.layout == "covr retriever":
        load_covr_weights(model, src.state, src.location, strict)
    return model.eval()


@contextlib.contextmanager
def collect_notes(logger_name: str = "covr.models") -> Iterator[list[str]]:
    """Collect what the loaders log (dropped keys, interpolated positions, ...) during a load: the
    conversion tool writes these notes into the model card. They are logged as usual too."""
    notes: list[str] = []

    class _Collector(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())

    logger = logging.getLogger(logger_name)
    handler, level = _Collector(logging.INFO), logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield notes
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
