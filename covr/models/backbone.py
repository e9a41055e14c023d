"""The narrow interface every vision-language backbone (BLIP-2, BLIP) offers the retriever.

A backbone owns its encoders and tokenizer; the retriever, X-Aligner, training module and
evaluators only call the methods below and never reach inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from transformers import PretrainedConfig


def architecture_fields(config, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A transformers sub-config as a plain dict without the generic PretrainedConfig fields
    (versions, labels, output flags) nor `drop`: what a backbone `spec` stores to rebuild it."""
    generic = set(PretrainedConfig().to_dict()) | set(drop)
    return {k: v for k, v in config.to_dict().items() if k not in generic}


@dataclass
class TextTokens:
    """Tokenised text: input_ids [B, L] (long), attention_mask [B, L] (1 = real token)."""

    input_ids: Tensor
    attention_mask: Tensor


class Backbone(nn.Module):
    """Base class: the methods the retriever uses.

    vision_tokens(pixels [N,3,H,W]) -> [N,S,Dv]        frozen vision encoder output
    image_embeddings(vision_tokens) -> [N,Q,E]          target features, per-token L2-normalised
    visual_summary(vision_tokens) -> [N,Qs,summary_width] compact per-frame tokens (X-Aligner memory)
    tokenize(texts, max_length) -> TextTokens
    text_hidden(tokens) -> [B,L,H]                      text-only encoder states (X-Aligner memory)
    text_embedding(tokens) -> [B,E]                     normalised caption feature
    joint_hidden(vision_tokens, tokens, vision_mask) -> [B,Q,H]  composed-query hidden states
    project_query(hidden [B,Q,H]) -> [B,Q,E]           normalised query head (text projection)
    text_projection: nn.Linear                          copied into X-Aligner's own output head
    """

    family: str = "base"
    config = None  # the transformers config of the wrapped model (vision_config, image_text_hidden_size)

    def __init__(self) -> None:
        super().__init__()
        self.target_path: nn.ModuleDict | None = None  # frozen copy of target-path parts, once made

    @property
    def image_size(self) -> int:
        return int(self.config.vision_config.image_size)

    @property
    def vision_width(self) -> int:
        return int(self.config.vision_config.hidden_size)

    @property
    def embed_dim(self) -> int:
        return int(self.config.image_text_hidden_size)

    def check_frame_size(self, pixels: Tensor) -> None:
        """Reject frames whose size does not match the vision position embeddings."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected frames [N, 3, H, W], got shape {tuple(pixels.shape)}")
        h, w = pixels.shape[-2:]
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(
                f"frames are {h}x{w} but this {self.family} model expects {self.image_size}x{self.image_size} "
                f"(its position embeddings cover that grid); resize the frames, or build the model with "
                f"image_size={h} so the checkpoint's position embeddings are interpolated at load"
            )

    def default_text_encoder(self) -> list[str]:  # pragma: no cover - interface
        """Parameter-name patterns of the textual query encoder (trained in stage 2)."""
        raise NotImplementedError

    def pretrain_parameters(self) -> list[str]:  # pragma: no cover - interface
        """Parameter-name patterns trained by stage 0 (contrastive video-caption adaptation)."""
        raise NotImplementedError

    def target_parameter_names(self) -> list[str]:  # pragma: no cover - interface
        """Names of the parameters the target (gallery) path uses."""
        raise NotImplementedError

    def target_state(self) -> dict[str, Tensor]:  # pragma: no cover - interface
        """Tensors of the target path by canonical name (identical whether or not it was copied)."""
        raise NotImplementedError

    def freeze_target_path(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError
