"""LAVIS BLIP-2 (`Blip2Qformer`, CoVR-2 `blip2_cir`) state dicts -> transformers BLIP-2 names.
Hand-written on purpose, because: transformers ships no LAVIS / CoVR converter (its repository's one-off
scripts need the original code installed); `python -m covr.tools.verify_fixture` checks this table against LAVIS's outputs.

Mapping (see ../shared/guide/backbones.md):
  visual_encoder.* (ViT embeddings and blocks): covr/models/lavis_vit.py
  visual_encoder.blocks.i.attn.{q_bias,v_bias} -> ...self_attn.qkv.bias = cat(q_bias, 0, v_bias)
  ln_vision -> vision_model.post_layernorm
  Qformer.bert.embeddings.LayerNorm -> qformer.layernorm; Qformer.bert.embeddings.* -> embeddings.*
  Qformer.bert.encoder.* -> qformer.encoder.* (.attention.self. -> .attention.attention.,
                                               .crossattention.self. -> .crossattention.attention.)
  vision_proj -> vision_projection; text_proj -> text_projection; itm_head, query_tokens unchanged
  dropped: Qformer.cls.* (LM head), temp, *.position_ids
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any

import torch
from torch import Tensor

from covr.models.lavis_vit import vision_name

_DROPPED = re.compile(r"^(Qformer\.cls\.|temp$|.*position_ids$)")


def key_layout(keys: Collection[str]) -> str | None:
    """"LAVIS BLIP-2" or "transformers BLIP-2" when the key names are of that layout, else None."""
    if any(k.startswith("Qformer.") for k in keys):
        return "LAVIS BLIP-2"
    if any(k.startswith("qformer.") for k in keys) and "query_tokens" in keys:
        return "transformers BLIP-2"
    return None


def is_lavis_blip2(state: Mapping[str, Any]) -> bool:
    """True when the keys look like a LAVIS BLIP-2 Q-Former model."""
    return any(k.startswith("Qformer.bert.") for k in state) and "query_tokens" in state


def _rename_qformer(key: str) -> str:
    rest = key[len("Qformer.bert."):]
    if rest.startswith("embeddings.LayerNorm."):
        return "qformer.layernorm." + rest[len("embeddings.LayerNorm."):]
    if rest.startswith("embeddings."):
        return rest
    rest = rest.replace(".crossattention.self.", ".crossattention.attention.").replace(".attention.self.", ".attention.attention.")
    return "qformer." + rest


def convert_lavis_blip2(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """Rename a LAVIS BLIP-2 state dict. Returns (converted, dropped keys, unknown keys)."""
    out: dict[str, Tensor] = {}
    dropped, unknown = [], []
    q_bias: dict[str, Tensor] = {}
    v_bias: dict[str, Tensor] = {}
    for key, value in state.items():
        if _DROPPED.match(key):
            dropped.append(key)
        elif key.startswith("visual_encoder.blocks.") and key.endswith((".attn.q_bias", ".attn.v_bias")):
            block = key.split(".")[2]
            (q_bias if key.endswith("q_bias") else v_bias)[block] = value
        elif name := vision_name(key):
            out[name] = value
        elif key.startswith("ln_vision."):
            out["vision_model.post_layernorm." + key[len("ln_vision."):]] = value
        elif key.startswith("Qformer.bert."):
            out[_rename_qformer(key)] = value
        elif key.startswith("vision_proj."):
            out["vision_projection." + key[len("vision_proj."):]] = value
        elif key.startswith("text_proj."):
            out["text_projection." + key[len("text_proj."):]] = value
        elif key.startswith("itm_head.") or key == "query_tokens":
            out[key] = value
        else:
            unknown.append(key)
    for block in sorted(set(q_bias) | set(v_bias), key=int):
        if block not in q_bias or block not in v_bias:
            unknown.append(f"visual_encoder.blocks.{block}.attn.{'v' if block in q_bias else 'q'}_bias (its pair is missing)")
            continue
        q, v = q_bias[block], v_bias[block]
        out[f"vision_model.encoder.layers.{block}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    return out, dropped, unknown


def add_vision_prefix(eva_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A separate EVA ViT file (`eva_vit_g.pth`) has no `visual_encoder.` prefix: add it."""
    return {(k if k.startswith("visual_encoder.") else "visual_encoder." + k): v for k, v in eva_state.items()}


def has_vision(state: Mapping[str, Any]) -> bool:
    return any(k.startswith("visual_encoder.") for k in state)


def infer_blip2_spec(state: Mapping[str, Tensor], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Backbone spec (covr.models.blip2.model.make_blip2_config format) from converted-key shapes.

    Sizes come from the tensors; what shapes cannot tell (attention heads, image size when the
    position grid should be resized, activation, eps) comes from `base`."""
    base = base or {}
    vision = dict(base.get("vision_config") or {})
    qformer = dict(base.get("qformer_config") or {})
    s = state
    if "vision_model.embeddings.patch_embedding.weight" in s:
        w = s["vision_model.embeddings.patch_embedding.weight"]
        vision["hidden_size"] = int(w.shape[0])
        vision["patch_size"] = int(w.shape[-1])
        grid = int(math.isqrt(s["vision_model.embeddings.position_embedding"].shape[1] - 1))
        vision.setdefault("image_size", grid * vision["patch_size"])
        vision.setdefault("num_hidden_layers", 1 + max(int(k.split(".")[3]) for k in s if k.startswith("vision_model.encoder.layers.")))
        vision["intermediate_size"] = int(s["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0])
    qformer["hidden_size"] = int(s["query_tokens"].shape[-1])
    qformer["vocab_size"] = int(s["embeddings.word_embeddings.weight"].shape[0])
    qformer["max_position_embeddings"] = int(s["embeddings.position_embeddings.weight"].shape[0])
    layers = {int(k.split(".")[3]) for k in s if k.startswith("qformer.encoder.layer.")}
    qformer["num_hidden_layers"] = 1 + max(layers)
    qformer["intermediate_size"] = int(s["qformer.encoder.layer.0.intermediate_query.dense.weight"].shape[0])
    cross = sorted({int(k.split(".")[3]) for k in s if ".crossattention." in k})
    if cross:
        qformer["cross_attention_frequency"] = cross[1] - cross[0] if len(cross) > 1 else max(layers) + 1
        qformer["encoder_hidden_size"] = int(s[f"qformer.encoder.layer.{cross[0]}.crossattention.attention.key.weight"].shape[1])
        vision.setdefault("hidden_size", qformer["encoder_hidden_size"])
    spec = {k: v for k, v in base.items() if k not in ("vision_config", "qformer_config")}
    spec.update(
        vision_config=vision,
        qformer_config=qformer,
        num_query_tokens=int(s["query_tokens"].shape[1]),
        image_text_hidden_size=int(s["text_projection.weight"].shape[0]),
    )
    return spec
