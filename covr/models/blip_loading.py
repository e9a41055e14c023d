"""Building a BLIP backbone from a transformers folder / hub id, a LAVIS / CoVR state dict, or a spec."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from torch import Tensor
from transformers import BlipConfig, BlipForImageTextRetrieval

from covr.models.blip import BlipBackbone, build_blip_random, make_blip_config
from covr.models.blip2_loading import POSITION_KEY, set_image_size
from covr.models.checkpoint_io import CheckpointError, initialise_left_out, load_state, skip_weight_init
from covr.models.convert.lavis_blip import convert_lavis_blip, describe_dropped, infer_blip_spec
from covr.models.convert.lavis_blip2 import resize_position_embedding
from covr.models.tokenizer import build_tokenizer

log = logging.getLogger(__name__)


def blip_backbone_from_state(
    state: Mapping[str, Tensor],
    tokenizer,
    base_spec: dict[str, Any] | None = None,
    image_size: int | None = None,
    strict: bool = True,
    source: str = "LAVIS BLIP state dict",
) -> BlipBackbone:
    """Convert a LAVIS / original BLIP / CoVR state dict (transformers names pass unchanged) and load it.

    Momentum copies, queues and `temp` are dropped with a logged note. image_size: frame size to run
    at; position embeddings are interpolated (bicubic) when the checkpoint has another grid."""
    converted, dropped, unknown = convert_lavis_blip(state)
    if dropped:
        log.info("%s: dropped %d keys inference does not use: %s", source, len(dropped), describe_dropped(dropped))
    for key, what in (("vision_model.embeddings.patch_embedding.weight", "vision encoder"), ("text_encoder.embeddings.word_embeddings.weight", "text encoder")):
        if key not in converted:
            raise CheckpointError(f"{source} holds no BLIP {what} weights (no {key.split('.')[0]} keys); expected a full BLIP retrieval state dict")
    if unknown:
        msg = f"{source}: {len(unknown)} keys have no BLIP counterpart: {', '.join(sorted(unknown)[:25])}"
        if strict:
            raise CheckpointError(msg + " (strict=False ignores them)")
        log.warning(msg)
    spec = infer_blip_spec(converted, copy.deepcopy(base_spec or {}))
    set_image_size(converted, spec, image_size, source)
    vocab = spec["text_config"]["vocab_size"]
    if len(tokenizer) != vocab:
        raise CheckpointError(f"{source}: the tokenizer has {len(tokenizer)} tokens but the checkpoint's word embeddings {vocab}; expected bert-base-uncased + [DEC] + [ENC]")
    with skip_weight_init():  # every weight is loaded next
        model = BlipForImageTextRetrieval(make_blip_config(spec))
    backbone = BlipBackbone(model, tokenizer)
    initialise_left_out(model, load_state(backbone, converted, source, strict=strict, optional=("itm_head.",)))
    return backbone


def blip_backbone_from_pretrained(name_or_path: str, tokenizer=None, image_size: int | None = None) -> BlipBackbone:
    """A transformers BLIP retrieval model (`Salesforce/blip-itm-large-coco` layout) from a hub id or a
    folder written by `save_pretrained`. Hub ids need network access (or the local HF cache)."""
    config = BlipConfig.from_pretrained(name_or_path)
    config.text_config.is_decoder = True  # the cross-attention layers
    model = BlipForImageTextRetrieval.from_pretrained(name_or_path, config=config)
    if image_size is not None and image_size != config.vision_config.image_size:
        state = model.state_dict()
        patch = config.vision_config.patch_size
        state[POSITION_KEY] = resize_position_embedding(state[POSITION_KEY], image_size // patch, name_or_path)
        config.vision_config.image_size = image_size
        model = BlipForImageTextRetrieval(config)
        load_state(model, state, name_or_path)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(name_or_path, "blip")
    return BlipBackbone(model.float(), tokenizer)


def build_blip_random_backbone(cfg: Mapping[str, Any]) -> BlipBackbone:
    """Random init from covr's config (`weights: null`): `spec`, `tokenizer` (a vocabulary source),
    `image_size`, `seed`. Weights of any format go through covr.models.loading instead."""
    tok_source = cfg.get("tokenizer")
    if tok_source is None:
        raise ValueError("a randomly initialised backbone needs `tokenizer` (a vocabulary source)")
    spec = copy.deepcopy(dict(cfg.get("spec") or {}))
    if cfg.get("image_size") is not None:
        spec.setdefault("vision_config", {})["image_size"] = cfg["image_size"]
    return build_blip_random(spec, build_tokenizer(tok_source, "blip"), cfg.get("seed"))
