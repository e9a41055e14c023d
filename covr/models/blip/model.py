"""BLIP (v1) backbone: transformers' BLIP retrieval parts, exposing only what composed retrieval needs.

The parameters keep transformers' `BlipForImageTextRetrieval` names (`vision_model.*`,
`text_encoder.*`, `vision_proj.*`, `text_proj.*`, `itm_head.*`), so a hub state dict loads
unchanged and a LAVIS / CoVR one loads after renaming the ViT (covr/models/blip/lavis_keys.py).

CoVR (BLIP) composed query: the edit text with its first token replaced by `[ENC]` runs through the
image-grounded text encoder (cross-attention in every layer to the reference frame's ViT tokens);
CLS -> text_proj -> L2 normalise. It is one "token": Q = 1. Target: normalize(vision_proj(ViT CLS)).

Shapes: N images, B samples, S vision tokens (CLS + patches), Dv vision width,
H text width (768), L text tokens, E retrieval width (256).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BlipConfig, BlipForImageTextRetrieval

from covr.models.backbone import Backbone, TextTokens, architecture_fields
from covr.models.tokenizer import ENC_TOKEN

# Stage-2 default: the textual query encoder (image-grounded BERT) and its projection.
BLIP_TEXT_ENCODER = ("text_encoder.*", "text_proj.*")
_TEXT_TOKEN_IDS = ("bos_token_id", "eos_token_id", "sep_token_id", "pad_token_id")


def make_blip_config(spec: dict[str, Any], attn_implementation: str | None = None) -> BlipConfig:
    """Build a transformers `BlipConfig` from covr's backbone spec.

    spec keys: `vision_config` and `text_config` (transformers field names), `image_text_hidden_size`.
    The text encoder always has cross-attention (`is_decoder`, which is how transformers enables it)
    and its `encoder_hidden_size` follows the vision width. Special-token ids beyond a small test
    vocabulary are cleared (they only matter for captioning). `attn_implementation` is not used:
    transformers' BLIP has one attention path."""
    vision = dict(spec.get("vision_config") or {})
    text = dict(spec.get("text_config") or {})
    text["is_decoder"] = True
    vocab = text.get("vocab_size")
    if vocab is not None:
        for key in _TEXT_TOKEN_IDS:
            default = getattr(BlipConfig().text_config, key)
            if text.get(key, default) is not None and text.get(key, default) >= vocab:
                text[key] = None
    return BlipConfig(vision_config=vision, text_config=text, image_text_hidden_size=int(spec.get("image_text_hidden_size", 256)))


class BlipBackbone(Backbone):
    """Frozen-or-trainable BLIP parts with retrieval-level methods (see `Backbone`)."""

    family = "blip"
    transformers_class = BlipForImageTextRetrieval
    parts = ("vision_model", "text_encoder", "vision_proj", "text_proj", "itm_head")
    # the target path: ViT CLS -> vision_proj. Only vision_proj is copied: the ViT is frozen outside
    # stage 0, as for BLIP-2, and stage 2 trains only the text encoder, which targets do not use
    target_parts = ("vision_model", "vision_proj")
    copied_target_parts = ("vision_proj",)
    text_encoder_patterns = BLIP_TEXT_ENCODER
    pretrain_patterns = ("vision_model.*", "vision_proj.*", *BLIP_TEXT_ENCODER)  # all but the ITM head

    def __init__(self, model: BlipForImageTextRetrieval, tokenizer):
        super().__init__(model, tokenizer)
        enc = tokenizer.convert_tokens_to_ids(ENC_TOKEN)
        if enc is None or enc == tokenizer.unk_token_id:
            raise ValueError(f"a BLIP tokenizer needs the {ENC_TOKEN} token (build it with build_tokenizer(..., family='blip'))")
        self.enc_token_id = int(enc)

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.config.text_config.hidden_size)

    @property
    def num_query_tokens(self) -> int:
        return 1

    @property
    def summary_width(self) -> int:
        return self.vision_width

    @property
    def text_projection(self) -> nn.Linear:
        """The query head (X-Aligner copies it into its own output projection)."""
        return self.text_proj

    @property
    def spec(self) -> dict[str, Any]:
        """Architecture in `make_blip_config` form: enough to rebuild this backbone without weights."""
        return {
            "vision_config": architecture_fields(self.config.vision_config),
            "text_config": architecture_fields(self.config.text_config, drop=("is_decoder",)),
            "image_text_hidden_size": self.embed_dim,
        }

    # ---- vision ------------------------------------------------------------------------------
    def image_embeddings(self, vision_tokens: Tensor) -> Tensor:
        """Target-side features: [N, S, Dv] -> normalize(vision_proj(CLS)) [N, 1, E]."""
        projection = self.vision_proj if self.target_path is None else self.target_path["vision_proj"]
        return F.normalize(projection(vision_tokens[:, 0]), dim=-1).unsqueeze(1)

    def visual_summary(self, vision_tokens: Tensor) -> Tensor:
        """Compact per-frame visual token for X-Aligner ("queries" memory): the ViT CLS token
        [N, 1, Dv], i.e. what the target path embeds. `visual_memory: patches` gives all S tokens."""
        return vision_tokens[:, :1]

    # ---- text --------------------------------------------------------------------------------
    def text_hidden(self, tokens: TextTokens) -> Tensor:
        """Unimodal text encoder ([CLS] first, no cross-attention): [B, L] ids -> [B, L, H]."""
        out = self.text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, is_decoder=False)
        return out.last_hidden_state

    # ---- composed query ----------------------------------------------------------------------
    def multimodal_hidden(self, vision_tokens: Tensor, tokens: TextTokens, vision_mask: Tensor | None = None) -> Tensor:
        """Image-grounded text encoder: `[ENC]` + text tokens cross-attending to the image -> [B, L, H].

        vision_tokens [B, S', Dv] (S' may hold several frames), vision_mask [B, S'] (1 = real token)."""
        ids = tokens.input_ids.clone()
        ids[:, 0] = self.enc_token_id  # CoVR / BLIP ITM: [ENC] replaces [CLS]
        if vision_mask is None or bool(vision_mask.all()):
            return self._grounded(ids, tokens.attention_mask, vision_tokens)
        # transformers 5.x BLIP runs its cross-attention unmasked (BlipTextSelfAttention reads an
        # `encoder_attention_mask` that BlipTextAttention never passes on). So instead of masking,
        # samples with the same number of real tokens are encoded together, without the padding.
        keep = vision_mask.bool()
        counts = keep.sum(dim=1)
        out: Tensor | None = None
        for n in counts.unique().tolist():
            rows = (counts == n).nonzero().squeeze(1)
            real = vision_tokens[rows][keep[rows]].view(len(rows), int(n), -1)  # [b, n, Dv]
            hidden = self._grounded(ids[rows], tokens.attention_mask[rows], real)
            out = hidden.new_zeros(ids.shape[0], *hidden.shape[1:]) if out is None else out
            out[rows] = hidden
        return out

    def _grounded(self, ids: Tensor, attention_mask: Tensor, vision_tokens: Tensor) -> Tensor:
        """One text-encoder pass with cross-attention to every vision token: [B, L, H]."""
        vision_mask = torch.ones(vision_tokens.shape[:2], dtype=torch.long, device=vision_tokens.device)
        out = self.text_encoder(
            input_ids=ids,
            attention_mask=attention_mask,
            encoder_hidden_states=vision_tokens,
            encoder_attention_mask=vision_mask,
            is_decoder=False,
        )
        return out.last_hidden_state

    def joint_hidden(self, vision_tokens: Tensor, tokens: TextTokens, vision_mask: Tensor | None = None) -> Tensor:
        """Composed-query hidden state: the multimodal `[ENC]` (CLS) output [B, 1, H]."""
        return self.multimodal_hidden(vision_tokens, tokens, vision_mask)[:, :1]

    def itm_logits(self, vision_tokens: Tensor, tokens: TextTokens) -> Tensor:
        """Image-text matching logits [B, 2] (ITM head on the multimodal CLS)."""
        return self.itm_head(self.joint_hidden(vision_tokens, tokens)[:, 0])


def build_blip_random(spec: dict[str, Any], tokenizer, seed: int | None = None, attn_implementation: str | None = None) -> BlipBackbone:
    """A randomly initialised BLIP (tests, toy runs). The ViT is initialised N(0, 0.02) as in BLIP
    (transformers' vision default 1e-10 would map every image to nearly the same output)."""
    spec = copy.deepcopy(spec)
    spec.setdefault("vision_config", {}).setdefault("initializer_range", 0.02)
    config = make_blip_config(spec)
    if seed is not None:
        torch.manual_seed(seed)
    return BlipBackbone(BlipForImageTextRetrieval(config), tokenizer)
