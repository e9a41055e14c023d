"""The one loader for every weights format, detected automatically (see covr.models.formats):

    load_model(source, ...) -> ComposedRetriever   (the inference API `covr.load` and the conversion tool)

Backbone-only sources (transformers, LAVIS, CoVR / CoVR-2 files) give a retriever with the
family's own composed query (`query_head: joint`), which is also what an untrained X-Aligner
returns. covr folders and checkpoints rebuild exactly the retriever that was saved.

Layers, each importing only from those below it (tests/test_imports.py checks that covr
has no import circle):
    loading                      load_model
    build                        factories: build_backbone / build_retriever / backbone_from_weights
    formats, folder, covr_checkpoint, families   read / detect / write files; the family registry
    blip2/, blip/                one package per backbone family: model, builders, LAVIS keys
    backbone, retriever, heads, xaligner, lavis_vit, checkpoint_io, tokenizer, trainable
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from covr.models.build import backbone_from_weights, build_retriever, load_covr_weights, load_model_folder, retriever_from_checkpoint
from covr.models.checkpoint_io import CheckpointError
from covr.models.families import FAMILIES
from covr.models.formats import Source, check_family, inspect_source
from covr.models.heads import default_stage
from covr.models.retriever import ComposedRetriever


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
    shortcut for config's head (default "joint"); image_size / tokenizer / spec / vision_weights /
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
    backbone = backbone_from_weights(backbone_cfg, src)
    head = query_head or "joint"
    cfg = copy.deepcopy(dict(config)) if config is not None else {"query_head": head, "max_text_length": FAMILIES[src.family].max_text_length}
    cfg.setdefault("stage", default_stage(cfg.get("query_head", "xaligner")))
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
