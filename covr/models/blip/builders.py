"""Building a BLIP backbone from a LAVIS / CoVR / transformers state dict or a transformers folder /
hub id. Files are read and recognised by covr.models.formats; these functions receive their contents."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping

from torch import Tensor
from transformers import BlipConfig

from covr.models.backbone import WeightsOptions, report_unknown_keys, set_image_size
from covr.models.blip.lavis_keys import convert_lavis_blip, describe_dropped, infer_blip_spec
from covr.models.blip.model import BlipBackbone, make_blip_config
from covr.models.checkpoint_io import CheckpointError
from covr.models.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

_REQUIRED = (("vision_model.embeddings.patch_embedding.weight", "vision encoder"), ("text_encoder.embeddings.word_embeddings.weight", "text encoder"))


def from_state(state: Mapping[str, Tensor], layout: str, tokenizer, options: WeightsOptions) -> BlipBackbone:
    """A backbone from a LAVIS / original BLIP / CoVR state dict, or one under transformers names
    (either `lavis_keys.key_layout`: one converter serves both, transformers names pass unchanged).

    Momentum copies, queues and `temp` are dropped with a logged note. Sizes come from the tensor
    shapes, the rest from `options.spec`; position embeddings are interpolated (bicubic) to
    `options.image_size`. `options.vision_state` does not apply (the ViT is always in the file)."""
    source = options.source
    converted, dropped, unknown = convert_lavis_blip(state)
    if dropped:
        log.info("%s: dropped %d keys inference does not use: %s", source, len(dropped), describe_dropped(dropped))
    for key, what in _REQUIRED:
        if key not in converted:
            raise CheckpointError(f"{source} holds no BLIP {what} weights (no {key.split('.')[0]} keys); expected a full BLIP retrieval state dict")
    report_unknown_keys(unknown, "BLIP", source, options.strict)
    spec = infer_blip_spec(converted, copy.deepcopy(options.spec))
    set_image_size(converted, spec, options.image_size, source)
    vocab = spec["text_config"]["vocab_size"]
    if len(tokenizer) != vocab:
        raise CheckpointError(f"{source}: the tokenizer has {len(tokenizer)} tokens but the checkpoint's word embeddings {vocab}; expected bert-base-uncased + [DEC] + [ENC]")
    return BlipBackbone.from_converted_state(converted, make_blip_config(spec), tokenizer, source, options.strict)


def from_pretrained(name_or_path: str, tokenizer, options: WeightsOptions) -> BlipBackbone:
    """A transformers BLIP retrieval model (`Salesforce/blip-itm-large-coco` layout) from a hub id or a
    folder written by `save_pretrained`. Hub ids need network access (or the local HF cache)."""
    config = BlipConfig.from_pretrained(name_or_path)
    config.text_config.is_decoder = True  # the cross-attention layers
    model = BlipBackbone.pretrained_model(name_or_path, config, options.image_size)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(name_or_path, "blip")
    return BlipBackbone(model, tokenizer)
