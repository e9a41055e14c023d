"""Building a BLIP-2 backbone from a LAVIS state dict, a transformers state dict or folder / hub id.
Files are read and recognised by covr.models.formats; these functions receive their contents."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from torch import Tensor
from transformers import Blip2Config

from covr.models.backbone import WeightsOptions, report_unknown_keys, set_image_size
from covr.models.blip2.lavis_keys import add_vision_prefix, convert_lavis_blip2, has_vision, infer_blip2_spec, is_lavis_blip2
from covr.models.blip2.model import Blip2Backbone, make_blip2_config
from covr.models.checkpoint_io import CheckpointError
from covr.models.tokenizer import build_tokenizer

log = logging.getLogger(__name__)


def from_state(state: Mapping[str, Tensor], layout: str, tokenizer, options: WeightsOptions) -> Blip2Backbone:
    """A backbone from a state dict in either BLIP-2 layout (`lavis_keys.key_layout`): LAVIS names
    are converted first. Sizes come from the tensor shapes, the rest from `options.spec`.

    LAVIS: `options.vision_state` supplies the ViT that stage-1 `blip2_pretrained.pth` leaves out
    (LAVIS loads `eva_vit_g.pth`, whose keys have no `visual_encoder.` prefix)."""
    spec = copy.deepcopy(options.spec)
    if layout == "LAVIS BLIP-2":
        state = lavis_to_transformers(state, options)
        spec.setdefault("post_layernorm_eps", 1e-5)  # LAVIS ln_vision
    state = dict(state)
    spec = infer_blip2_spec(state, spec)
    extra_layers = _vision_layers_beyond(state, spec["vision_config"]["num_hidden_layers"])
    if extra_layers:
        log.info("%s: dropping %d vision keys beyond block %d, as LAVIS does", options.source, len(extra_layers), spec["vision_config"]["num_hidden_layers"])
        for k in extra_layers:
            state.pop(k)
    set_image_size(state, spec, options.image_size, options.source)
    config = make_blip2_config(spec, options.attn_implementation)
    eps = spec.get("post_layernorm_eps")
    return Blip2Backbone.from_converted_state(state, config, tokenizer, options.source, options.strict, post_layernorm_eps=eps)


def lavis_to_transformers(state: Mapping[str, Tensor], options: WeightsOptions) -> dict[str, Tensor]:
    """A LAVIS BLIP-2 state dict (plus the ViT of `options.vision_state`) under transformers names;
    dropped keys are logged, unknown ones fail when `options.strict`."""
    source = options.source
    state = dict(state)
    if not is_lavis_blip2(state):
        raise CheckpointError(f"{source} is not a LAVIS BLIP-2 state dict (no 'Qformer.bert.*' / 'query_tokens' keys)")
    if options.vision_state is not None:
        extra = add_vision_prefix(options.vision_state)
        state.update({k: v for k, v in extra.items() if k not in state})
    if not has_vision(state):
        raise CheckpointError(
            f"{source} holds no vision encoder weights (LAVIS stage-1 files leave the frozen ViT out); "
            "pass the ViT file as vision_weights (e.g. eva_vit_g.pth)"
        )
    converted, dropped, unknown = convert_lavis_blip2(state)
    if dropped:
        log.info("%s: dropped %d keys retrieval does not use (LM head, temp, position ids)", source, len(dropped))
    report_unknown_keys(unknown, "BLIP-2", source, options.strict)
    return converted


def _vision_layers_beyond(state: dict[str, Tensor], num_layers: int) -> list[str]:
    prefix = "vision_model.encoder.layers."
    return [k for k in state if k.startswith(prefix) and int(k[len(prefix):].split(".")[0]) >= num_layers]


def from_pretrained(name_or_path: str, tokenizer, options: WeightsOptions) -> Blip2Backbone:
    """A transformers BLIP-2 retrieval model (`Salesforce/blip2-itm-vit-g` layout) from a hub id or a
    folder written by `save_pretrained`. Hub ids need network access (or the local HF cache).
    LAVIS's ln_vision eps comes from `options.spec["post_layernorm_eps"]`, else from the config field
    of that name that covr's `to_transformers()` writes."""
    config = Blip2Config.from_pretrained(name_or_path)
    config.qformer_config.use_qformer_text_input = True
    model = Blip2Backbone.pretrained_model(name_or_path, config, options.image_size, attn_implementation=options.attn_implementation)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(name_or_path, "blip2")
    eps: Any = options.spec.get("post_layernorm_eps")
    if eps is None:
        eps = getattr(config.vision_config, "post_layernorm_eps", None)
    return Blip2Backbone(model, tokenizer, eps)
