"""Building a BLIP-2 backbone from a transformers folder / hub id, a LAVIS file, or a spec (random init)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from torch import Tensor
from transformers import Blip2Config, Blip2ForImageTextRetrieval

from covr.models.blip2 import Blip2Backbone, build_blip2_random, make_blip2_config
from covr.models.checkpoint_io import CheckpointError, initialise_left_out, load_state, skip_weight_init, strip_prefix
from covr.models.convert.lavis_blip2 import (
    add_vision_prefix,
    convert_lavis_blip2,
    has_vision,
    infer_blip2_spec,
    is_lavis_blip2,
    resize_position_embedding,
)
from covr.models.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

POSITION_KEY = "vision_model.embeddings.position_embedding"


def lavis_state_dict(obj: Mapping[str, Any]) -> dict[str, Tensor]:
    """The model weights inside a LAVIS .pth / CoVR-2 .ckpt (under "model") or a bare state dict."""
    state = obj.get("model", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping):
        raise CheckpointError("no state dict found (expected a dict of tensors, or one under 'model')")
    return strip_prefix({k: v for k, v in state.items() if isinstance(v, Tensor)}, "module.")


def _vision_layers_beyond(state: dict[str, Tensor], num_layers: int) -> list[str]:
    prefix = "vision_model.encoder.layers."
    return [k for k in state if k.startswith(prefix) and int(k[len(prefix):].split(".")[0]) >= num_layers]


def backbone_from_lavis_state(
    state: Mapping[str, Tensor],
    tokenizer,
    base_spec: dict[str, Any] | None = None,
    vision_state: Mapping[str, Tensor] | None = None,
    image_size: int | None = None,
    attn_implementation: str = "sdpa",
    strict: bool = True,
    source: str = "LAVIS state dict",
) -> Blip2Backbone:
    """Convert a LAVIS BLIP-2 state dict and load it into a transformers-based backbone.

    vision_state: the ViT from a second file (LAVIS stage-1 `blip2_pretrained.pth` leaves it out;
    LAVIS loads `eva_vit_g.pth`, whose keys have no `visual_encoder.` prefix).
    image_size: frame size to run at; position embeddings are interpolated (bicubic) when the
    checkpoint was trained at another size (224 <-> 364), with a logged note."""
    state = dict(state)
    if not is_lavis_blip2(state):
        raise CheckpointError(f"{source} is not a LAVIS BLIP-2 state dict (no 'Qformer.bert.*' / 'query_tokens' keys)")
    if vision_state is not None:
        extra = add_vision_prefix(lavis_state_dict(vision_state))
        state.update({k: v for k, v in extra.items() if k not in state})
    if not has_vision(state):
        raise CheckpointError(
            f"{source} holds no vision encoder weights (LAVIS stage-1 files leave the frozen ViT out); "
            "pass the ViT file as vision_weights (e.g. eva_vit_g.pth)"
        )
    converted, dropped, unknown = convert_lavis_blip2(state)
    if dropped:
        log.info("%s: dropped %d keys retrieval does not use (LM head, temp, position ids)", source, len(dropped))
    if unknown:
        msg = f"{source}: {len(unknown)} keys have no BLIP-2 counterpart: {', '.join(sorted(unknown)[:25])}"
        if strict:
            raise CheckpointError(msg + " (strict=False ignores them)")
        log.warning(msg)
    spec = copy.deepcopy(base_spec or {})
    spec.setdefault("post_layernorm_eps", 1e-5)  # LAVIS ln_vision
    return backbone_from_blip2_state(converted, tokenizer, spec, image_size, attn_implementation, strict, source)


def backbone_from_blip2_state(
    converted: Mapping[str, Tensor],
    tokenizer,
    base_spec: dict[str, Any] | None = None,
    image_size: int | None = None,
    attn_implementation: str = "sdpa",
    strict: bool = True,
    source: str = "state dict",
) -> Blip2Backbone:
    """A backbone from a state dict under transformers BLIP-2 names (converted from LAVIS, or a
    transformers `model.safetensors`): sizes from the tensor shapes, the rest from `base_spec`."""
    converted = dict(converted)
    spec = infer_blip2_spec(converted, copy.deepcopy(base_spec or {}))
    extra_layers = _vision_layers_beyond(converted, spec["vision_config"]["num_hidden_layers"])
    if extra_layers:
        log.info("%s: dropping %d vision keys beyond block %d, as LAVIS does", source, len(extra_layers), spec["vision_config"]["num_hidden_layers"])
        for k in extra_layers:
            converted.pop(k)
    set_image_size(converted, spec, image_size, source)
    config = make_blip2_config(spec)
    config._attn_implementation = attn_implementation
    with skip_weight_init():  # every weight is loaded next
        model = Blip2ForImageTextRetrieval(config)
    backbone = Blip2Backbone(model, tokenizer, spec.get("post_layernorm_eps"))
    initialise_left_out(model, load_state(backbone, converted, source, strict=strict, optional=("itm_head.",)))
    return backbone


def set_image_size(state: dict[str, Tensor], spec: dict[str, Any], image_size: int | None, source: str) -> None:
    """Run at `image_size` (default: the spec's): interpolate the position embeddings in `state` to
    its patch grid (logged) and record it in `spec["vision_config"]`."""
    vision = spec["vision_config"]
    if image_size is None:
        image_size = vision["image_size"]
    grid = image_size // vision["patch_size"]
    if grid * vision["patch_size"] != image_size:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {vision['patch_size']}")
    if POSITION_KEY in state:
        state[POSITION_KEY] = resize_position_embedding(state[POSITION_KEY], grid, source)
    vision["image_size"] = image_size


def backbone_from_pretrained(
    name_or_path: str,
    tokenizer=None,
    image_size: int | None = None,
    attn_implementation: str = "sdpa",
    post_layernorm_eps: float | None = None,
) -> Blip2Backbone:
    """A transformers BLIP-2 retrieval model (`Salesforce/blip2-itm-vit-g` layout) from a hub id or a
    folder written by `save_pretrained`. Hub ids need network access (or the local HF cache)."""
    config = Blip2Config.from_pretrained(name_or_path)
    config.qformer_config.use_qformer_text_input = True
    model = Blip2ForImageTextRetrieval.from_pretrained(name_or_path, config=config, attn_implementation=attn_implementation)
    if image_size is not None and image_size != config.vision_config.image_size:
        state = model.state_dict()
        patch = config.vision_config.patch_size
        state[POSITION_KEY] = resize_position_embedding(state[POSITION_KEY], image_size // patch, name_or_path)
        config.vision_config.image_size = image_size
        config._attn_implementation = attn_implementation
        model = Blip2ForImageTextRetrieval(config)
        load_state(model, state, name_or_path)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(name_or_path, "blip2")
    if post_layernorm_eps is None:  # written by covr's to_transformers() for LAVIS-derived weights
        post_layernorm_eps = getattr(config.vision_config, "post_layernorm_eps", None)
    return Blip2Backbone(model.float(), tokenizer, post_layernorm_eps)


def build_blip2_backbone(cfg: Mapping[str, Any]) -> Blip2Backbone:
    """Backbone from covr's config (conf/model/backbone/*.yaml):

    weights: null (random init from `spec`), or weights of any supported format: a hub id /
    transformers folder, a LAVIS / CoVR-2 file, ... (detected by covr.models.loading)
    vision_weights: optional second file holding the ViT (LAVIS stage-1 checkpoints)
    tokenizer: vocabulary source (list, vocab.txt, folder, hub id); defaults to the weights' own
    spec: architecture (transformers field names); image_size: run size (interpolates positions)
    """
    if cfg.get("weights") is not None:
        from covr.models.loading import load_backbone_weights  # one loader for every format

        return load_backbone_weights({"family": "blip2", **cfg})
    spec = copy.deepcopy(dict(cfg.get("spec") or {}))
    image_size = cfg.get("image_size")
    tok_source = cfg.get("tokenizer")
    if tok_source is None:
        raise ValueError("a randomly initialised backbone needs `tokenizer` (a vocabulary source)")
    if image_size is not None:
        spec.setdefault("vision_config", {})["image_size"] = image_size
    return build_blip2_random(spec, build_tokenizer(tok_source, "blip2"), cfg.get("attn_implementation", "sdpa"), cfg.get("seed"))
