"""BLIP-2 backbone: transformers' BLIP-2 parts, exposing only what composed retrieval needs.

The parameters keep transformers' `Blip2ForImageTextRetrieval` names (`vision_model.*`,
`query_tokens`, `embeddings.*`, `qformer.*`, `vision_projection.*`, `text_projection.*`,
`itm_head.*`), so a hub state dict loads unchanged and a LAVIS one loads after renaming
(covr/models/blip2/lavis_keys.py).

Shapes: N images, B samples, S vision tokens (CLS + patches), Dv vision width,
Q query tokens, H Q-Former width, L text tokens, E retrieval width.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import Blip2Config, Blip2ForImageTextRetrieval

from covr.models.backbone import Backbone, TextTokens, architecture_fields

# Stage-2 default: the textual query encoder, i.e. every Q-Former part of the composed query path.
BLIP2_TEXT_ENCODER = ("query_tokens", "embeddings.*", "qformer.*", "text_projection.*")


def make_blip2_config(spec: dict[str, Any], attn_implementation: str | None = None) -> Blip2Config:
    """Build a transformers `Blip2Config` from covr's backbone spec.

    spec keys: `vision_config` and `qformer_config` (transformers field names), `num_query_tokens`,
    `image_text_hidden_size`. The Q-Former text path is always enabled (`use_qformer_text_input`),
    and `qformer_config.encoder_hidden_size` follows the vision width.
    """
    vision = dict(spec.get("vision_config") or {})
    qformer = dict(spec.get("qformer_config") or {})
    qformer["use_qformer_text_input"] = True
    if "hidden_size" in vision:
        qformer.setdefault("encoder_hidden_size", vision["hidden_size"])
    config = Blip2Config(
        vision_config=vision,
        qformer_config=qformer,
        num_query_tokens=int(spec.get("num_query_tokens", 32)),
        image_text_hidden_size=int(spec.get("image_text_hidden_size", 256)),
    )
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    return config


class Blip2Backbone(Backbone):
    """Frozen-or-trainable BLIP-2 parts with retrieval-level methods (see `Backbone`)."""

    family = "blip2"
    transformers_class = Blip2ForImageTextRetrieval
    parts = ("vision_model", "query_tokens", "embeddings", "qformer", "vision_projection", "text_projection", "itm_head")
    # the image-only path: ViT, then the Q-Former's queries; all but the (frozen) ViT are shared with
    # the composed query, which stage 2 fine-tunes, so those are copied
    target_parts = ("vision_model", "query_tokens", "qformer", "vision_projection")
    copied_target_parts = ("query_tokens", "qformer", "vision_projection")
    text_encoder_patterns = BLIP2_TEXT_ENCODER
    pretrain_patterns = ("vision_model.*", "vision_projection.*", *BLIP2_TEXT_ENCODER)  # all but the ITM head

    def __init__(self, model: Blip2ForImageTextRetrieval, tokenizer, post_layernorm_eps: float | None = None):
        super().__init__(model, tokenizer)
        if post_layernorm_eps is not None:  # LAVIS's ln_vision uses 1e-5, transformers' config 1e-6
            self.vision_model.post_layernorm.eps = float(post_layernorm_eps)

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.config.qformer_config.hidden_size)

    @property
    def num_query_tokens(self) -> int:
        return int(self.config.num_query_tokens)

    @property
    def summary_width(self) -> int:
        return self.hidden_size

    @property
    def spec(self) -> dict[str, Any]:
        """Architecture in `make_blip2_config` form: enough to rebuild this backbone without weights."""
        return {
            "vision_config": architecture_fields(self.config.vision_config),
            "qformer_config": architecture_fields(self.config.qformer_config, drop=("use_qformer_text_input",)),
            "num_query_tokens": self.num_query_tokens,
            "image_text_hidden_size": self.embed_dim,
            "post_layernorm_eps": self.vision_model.post_layernorm.eps,
        }

    def export_config(self) -> Blip2Config:
        """LAVIS's separate ln_vision eps travels as the extra config field `post_layernorm_eps`."""
        config = copy.deepcopy(self.config)
        config.vision_config.post_layernorm_eps = self.vision_model.post_layernorm.eps
        return config

    # ---- target path ---------------------------------------------------------------------------
    def _target_parts(self) -> tuple[Tensor, nn.Module, nn.Module]:
        if self.target_path is None:
            return self.query_tokens, self.qformer, self.vision_projection
        t = self.target_path
        return t.query_tokens, t["qformer"], t["vision_projection"]

    # ---- vision ------------------------------------------------------------------------------
    def image_query_hidden(self, vision_tokens: Tensor, target: bool = False) -> Tensor:
        """Image-only Q-Former pass: [N, S, Dv] -> query outputs [N, Q, H].

        target=True uses the frozen target-path copy when one exists."""
        query_tokens, qformer, _ = self._target_parts() if target else (self.query_tokens, self.qformer, None)
        queries = query_tokens.expand(vision_tokens.shape[0], -1, -1)
        mask = torch.ones(vision_tokens.shape[:2], dtype=torch.long, device=vision_tokens.device)
        out = qformer(query_embeds=queries, encoder_hidden_states=vision_tokens, encoder_attention_mask=mask)
        return out.last_hidden_state

    def image_embeddings(self, vision_tokens: Tensor) -> Tensor:
        """Target-side features: [N, S, Dv] -> normalize(vision_proj(query outputs)) [N, Q, E]."""
        _, _, projection = self._target_parts()
        return F.normalize(projection(self.image_query_hidden(vision_tokens, target=True)), dim=-1)

    def visual_summary(self, vision_tokens: Tensor) -> Tensor:
        """Compact per-frame visual tokens for X-Aligner: the query outputs [N, Q, H]."""
        return self.image_query_hidden(vision_tokens)

    # ---- text --------------------------------------------------------------------------------
    def text_hidden(self, tokens: TextTokens) -> Tensor:
        """Text-only Q-Former pass: [B, L] ids -> [B, L, H] (text feed-forward weights, no images)."""
        embeds = self.embeddings(input_ids=tokens.input_ids)
        out = self.qformer(query_embeds=embeds, query_length=0, attention_mask=tokens.attention_mask)
        return out.last_hidden_state

    # ---- composed query ----------------------------------------------------------------------
    def joint_hidden(self, vision_tokens: Tensor, tokens: TextTokens, vision_mask: Tensor | None = None) -> Tensor:
        """Joint [queries ; text] Q-Former pass with cross-attention to the image: query outputs [B, Q, H].

        vision_tokens [B, S', Dv] (S' may hold several frames), vision_mask [B, S'] (1 = real token)."""
        b = vision_tokens.shape[0]
        queries = self.query_tokens.expand(b, -1, -1)
        embeds = self.embeddings(input_ids=tokens.input_ids, query_embeds=queries)
        q = queries.shape[1]
        mask = torch.cat([torch.ones(b, q, dtype=tokens.attention_mask.dtype, device=embeds.device), tokens.attention_mask], dim=1)
        if vision_mask is None:
            vision_mask = torch.ones(vision_tokens.shape[:2], dtype=torch.long, device=vision_tokens.device)
        else:
            # transformers builds a 2-D encoder mask for all Q + L positions while only the Q query
            # positions cross-attend; an additive [B, 1, Q, S'] mask works for eager and sdpa alike.
            blocked = ~vision_mask.bool()[:, None, None, :]
            vision_mask = torch.zeros(blocked.shape, dtype=embeds.dtype, device=embeds.device)
            vision_mask = vision_mask.masked_fill(blocked, torch.finfo(embeds.dtype).min).expand(b, 1, q, -1)
        out = self.qformer(
            query_embeds=embeds,
            query_length=q,
            attention_mask=mask,
            encoder_hidden_states=vision_tokens,
            encoder_attention_mask=vision_mask,
        )
        return out.last_hidden_state[:, :q]

    def itm_logits(self, vision_tokens: Tensor, tokens: TextTokens) -> Tensor:
        """Image-text matching logits [B, 2] (ITM head on the joint query outputs, token mean)."""
        return self.itm_head(self.joint_hidden(vision_tokens, tokens)).mean(dim=1)


def build_blip2_random(spec: dict[str, Any], tokenizer, seed: int | None = None, attn_implementation: str = "sdpa") -> Blip2Backbone:
    """A randomly initialised BLIP-2 (tests, toy runs). Init follows LAVIS where transformers'
    defaults would make a random model degenerate: ViT weights N(0, 0.02) (transformers: 1e-10)
    and query tokens N(0, 0.02) (transformers: zeros)."""
    spec = copy.deepcopy(spec)
    spec.setdefault("vision_config", {}).setdefault("initializer_range", 0.02)
    config = make_blip2_config(spec, attn_implementation)
    if seed is not None:
        torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(config)
    with torch.no_grad():
        model.query_tokens.normal_(0.0, 0.02)
    return Blip2Backbone(model, tokenizer, spec.get("post_layernorm_eps"))
