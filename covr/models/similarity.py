"""Query-target similarity, shared by training, evaluation and the inference API.

Embeddings come in two shapes:
  tokens  [N, Q, E]  per-token L2-normalised (BLIP-2: Q = 32 Q-Former tokens; BLIP: Q = 1)
  pooled  [N, E]     token mean of the above (CoVR-2 style; *not* re-normalised)

Per-token normalisation comes first and everything after it is linear, so the token mean
can be taken before storage whenever only mean-pooled similarity is needed.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

SimilarityMode = Literal["mean", "max"]


def pool_tokens(x: Tensor) -> Tensor:
    """[..., Q, E] -> [..., E] token mean; a 2-D [N, E] input is returned unchanged."""
    return x if x.dim() == 2 else x.mean(dim=-2)


def similarity(query: Tensor, gallery: Tensor, mode: SimilarityMode = "mean") -> Tensor:
    """Score every query against every gallery item.

    query:   [Bq, Q, E] or [Bq, E]
    gallery: [N, Q, E] or [N, E]
    mode:
      "mean": pooled query . pooled gallery (CoVR-2's dot product of token means)
      "max":  max over gallery tokens of pooled query . gallery token (BLIP-2 ITC style);
              needs a token-level gallery [N, Q, E].
    returns  [Bq, N]
    """
    q = pool_tokens(query)
    if mode == "mean":
        return q @ pool_tokens(gallery).T
    if mode == "max":
        if gallery.dim() != 3:
            raise ValueError(
                f"similarity mode 'max' needs token-level gallery embeddings [N, Q, E], got shape {tuple(gallery.shape)}"
            )
        return torch.einsum("be,nqe->bnq", q, gallery).amax(dim=-1)
    raise ValueError(f"unknown similarity mode {mode!r}; expected 'mean' or 'max'")


def pool_frames(frame_embeddings: Tensor, weights: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
    """Weighted sum over frames.

    frame_embeddings: [B, F, Q, E] or [B, F, E]
    weights: [B, F] non-negative, rows summing to 1 (None = uniform over valid frames)
    mask:    [B, F] bool, True = real frame (None = all real)
    returns  [B, Q, E] or [B, E]
    """
    b, f = frame_embeddings.shape[:2]
    if weights is None:
        valid = torch.ones(b, f, device=frame_embeddings.device) if mask is None else mask.float()
        weights = valid / valid.sum(dim=1, keepdim=True).clamp_min(1.0)
    elif mask is not None:
        weights = weights * mask.to(weights.dtype)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    shape = (b, f) + (1,) * (frame_embeddings.dim() - 2)
    return (frame_embeddings * weights.reshape(shape).to(frame_embeddings.dtype)).sum(dim=1)


def score_weights(scores: Tensor, mask: Tensor | None = None, temperature: float = 0.1) -> Tensor:
    """CoVR's frame weights softmax(scores / 0.1) over the valid frames. scores: [B, F] -> [B, F]."""
    logits = scores / temperature
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=1)
