"""LAVIS / original BLIP retrieval (`BlipRetrieval`, CoVR `blip_cir`) state dicts -> transformers BLIP names.
Hand-written on purpose, because: transformers ships no LAVIS / CoVR converter (its repository's one-off
scripts need the original code installed); `python -m covr.tools.verify_fixture` checks this table against LAVIS's outputs.

Mapping (see ../shared/fixtures/lavis_blip_tiny.md):
  visual_encoder.* (ViT embeddings and blocks): covr/models/lavis_vit.py
  visual_encoder.norm -> vision_model.post_layernorm
  text_encoder.*, vision_proj, text_proj, itm_head: unchanged (as are transformers' own vision_model.* names)
  dropped: momentum copies (*_m.*), image/text/idx queues, queue pointers, temp, position ids,
           and the captioning decoder (text_decoder.*) of BLIP pretraining checkpoints
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from torch import Tensor

from covr.models.lavis_vit import VISION_EMBED, vision_name

log = logging.getLogger(__name__)

_VISION_EMBED = {
    **VISION_EMBED,  # same ViT layout as LAVIS BLIP-2's EVA encoder, plus the final norm BLIP applies
    "visual_encoder.norm.weight": "vision_model.post_layernorm.weight",
    "visual_encoder.norm.bias": "vision_model.post_layernorm.bias",
}
_MOMENTUM = re.compile(r"^(visual_encoder_m|text_encoder_m|vision_proj_m|text_proj_m)\.")
_DROPPED = re.compile(r"^(temp|image_queue|text_queue|idx_queue|queue_ptr|ptr_queue)$|position_ids$|^text_decoder\.")
_KEPT = ("text_encoder.", "vision_proj.", "text_proj.", "itm_head.", "vision_model.")  # vision_model: transformers names

# Real BLIP sizes: attention heads cannot be read from tensor shapes.
_HEADS_BY_WIDTH = {1024: 16, 768: 12}


def key_layout(keys: Collection[str]) -> str | None:
    """"transformers BLIP" or "LAVIS BLIP" (BERT text encoder; the ViT under transformers' or LAVIS's
    names) when the key names are of that layout, else None."""
    if not any(k.startswith("text_encoder.") for k in keys):
        return None
    return "transformers BLIP" if any(k.startswith("vision_model.") for k in keys) else "LAVIS BLIP"


def convert_lavis_blip(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """Rename a LAVIS BLIP retrieval state dict. Returns (converted, dropped keys, unknown keys)."""
    out: dict[str, Tensor] = {}
    dropped, unknown = [], []
    for key, value in state.items():
        if _MOMENTUM.match(key) or _DROPPED.search(key):
            dropped.append(key)
        elif name := vision_name(key, _VISION_EMBED):
            out[name] = value
        elif key.startswith(_KEPT):
            out[key] = value
        else:
            unknown.append(key)
    return out, dropped, unknown


def describe_dropped(dropped: list[str]) -> str:
    """One phrase saying what was dropped, e.g. '91 momentum (*_m) keys, 4 queue/pointer buffers, temp'."""
    momentum = sum(bool(_MOMENTUM.match(k)) for k in dropped)
    queues = sum(bool(re.search(r"queue|ptr", k)) for k in dropped)
    decoder = sum(k.startswith("text_decoder.") for k in dropped)
    parts = [f"{momentum} momentum-encoder (*_m) keys"] if momentum else []
    parts += [f"{queues} queue/pointer buffers"] if queues else []
    parts += [f"{decoder} captioning-decoder keys"] if decoder else []
    parts += ["temp"] if "temp" in dropped else []
    parts += ["position_ids"] if any(k.endswith("position_ids") for k in dropped) else []
    return ", ".join(parts)


def default_heads(width: int, part: str) -> int:
    """Attention heads of the released BLIP models for a given width; 64-d heads, with a warning,
    for any other width (a state dict does not record heads: pass them in the spec)."""
    if width in _HEADS_BY_WIDTH:
        return _HEADS_BY_WIDTH[width]
    heads = max(1, width // 64)
    log.warning("%s width %d is not a released BLIP size: assuming %d attention heads (set spec.%s.num_attention_heads)", part, width, heads, part)
    return heads


def infer_blip_spec(state: Mapping[str, Tensor], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Backbone spec (covr.models.blip.model.make_blip_config format) from converted-key shapes.

    Sizes come from the tensors; what shapes cannot tell (heads, eps, image size when the position
    grid should be resized) comes from `base`, else from the released BLIP models (ViT eps 1e-6,
    BERT eps 1e-12, 16 ViT-L / 12 BERT-base heads)."""
    base = base or {}
    vision = dict(base.get("vision_config") or {})
    text = dict(base.get("text_config") or {})
    s = state
    w = s["vision_model.embeddings.patch_embedding.weight"]
    vision["hidden_size"] = int(w.shape[0])
    vision["patch_size"] = int(w.shape[-1])
    grid = int(math.isqrt(s["vision_model.embeddings.position_embedding"].shape[1] - 1))
    vision.setdefault("image_size", grid * vision["patch_size"])
    vision["num_hidden_layers"] = 1 + max(int(k.split(".")[3]) for k in s if k.startswith("vision_model.encoder.layers."))
    vision["intermediate_size"] = int(s["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0])
    if "num_attention_heads" not in vision:
        vision["num_attention_heads"] = default_heads(vision["hidden_size"], "vision_config")
    vision.setdefault("layer_norm_eps", 1e-6)
    words = s["text_encoder.embeddings.word_embeddings.weight"]
    text["vocab_size"], text["hidden_size"] = int(words.shape[0]), int(words.shape[1])
    text["max_position_embeddings"] = int(s["text_encoder.embeddings.position_embeddings.weight"].shape[0])
    text["num_hidden_layers"] = 1 + max(int(k.split(".")[3]) for k in s if k.startswith("text_encoder.encoder.layer."))
    text["intermediate_size"] = int(s["text_encoder.encoder.layer.0.intermediate.dense.weight"].shape[0])
    if "num_attention_heads" not in text:
        text["num_attention_heads"] = default_heads(text["hidden_size"], "text_config")
    text.setdefault("layer_norm_eps", 1e-12)
    spec = {k: v for k, v in base.items() if k not in ("vision_config", "text_config")}
    spec.update(vision_config=vision, text_config=text, image_text_hidden_size=int(s["text_proj.weight"].shape[0]))
    return spec
