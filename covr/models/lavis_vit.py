"""LAVIS ViT key names -> transformers' BLIP / BLIP-2 vision names, shared by both families' converters.
Hand-written on purpose, because: transformers ships no LAVIS / CoVR converter (its repository's one-off
scripts need the original code installed); `python -m covr.tools.verify_fixture` checks this table against LAVIS's outputs.

  visual_encoder.{cls_token,pos_embed,patch_embed.proj} -> vision_model.embeddings.{class_embedding,position_embedding,patch_embedding}
  visual_encoder.blocks.i.{norm1,norm2,attn.qkv,attn.proj,mlp.fc1,mlp.fc2}
      -> vision_model.encoder.layers.i.{layer_norm1,layer_norm2,self_attn.qkv,self_attn.projection,mlp.fc1,mlp.fc2}
"""

from __future__ import annotations

import re

VISION_BLOCK = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.qkv": "self_attn.qkv",
    "attn.proj": "self_attn.projection",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
VISION_EMBED = {
    "visual_encoder.cls_token": "vision_model.embeddings.class_embedding",
    "visual_encoder.pos_embed": "vision_model.embeddings.position_embedding",
    "visual_encoder.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual_encoder.patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias",
}
VISION_BLOCK_KEY = re.compile(r"^visual_encoder\.blocks\.(\d+)\.(.+)\.(weight|bias)$")


def vision_name(key: str, embed: dict[str, str] = VISION_EMBED) -> str | None:
    """The transformers name of a LAVIS ViT embedding or block key (`embed`: the embedding table,
    which BLIP extends with its final norm); None for any other key, and for a block part that has no
    counterpart (the caller reports it as unknown)."""
    if key in embed:
        return embed[key]
    match = VISION_BLOCK_KEY.match(key)
    if not match or match.group(2) not in VISION_BLOCK:
        return None
    block, part, kind = match.groups()
    return f"vision_model.encoder.layers.{block}.{VISION_BLOCK[part]}.{kind}"
