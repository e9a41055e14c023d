"""Query-target similarity, shared by training, evaluation and the inference API.

Embeddings come in two shapes:
  tokens  [N, Q, E]  per-token L2-normalised (BLIP-2: Q = 32 Q-Former tokens; BLIP: Q = 1)
  pooled  [N, E]     token mean of the above (CoVR-2 style; *not* re-normalised)

Per-token normalisation comes first and everything after it is linear, so the token mean
can be taken before storage whenever only mean-pooled similarity is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

SimilarityMode = Literal["mean", "max_target_token", "max_token_pair", "uncertainty"]
SIMILARITY_MODES: tuple[str, ...] = ("mean", "max_target_token", "max_token_pair", "uncertainty")
# modes that score a query by its token mean (the others need the query's tokens)
POOLED_QUERY_MODES = ("mean", "max_target_token")


def pool_tokens(x: Tensor) -> Tensor:
    """[..., Q, E] -> [..., E] token mean; a 2-D [N, E] input is returned unchanged."""
    return x if x.dim() == 2 else x.mean(dim=-2)


def check_mode(mode: str) -> None:
    """Raise a one-line error for an unknown similarity mode (and for the retired name 'max')."""
    if mode == "max":
        raise ValueError(
            "similarity mode 'max' was split in two: 'max_target_token' (the token-mean query against each "
            "target token, the former 'max') or 'max_token_pair' (max over query tokens x target tokens, CoVR-2's CIRR)"
        )
    if mode not in SIMILARITY_MODES:
        raise ValueError(f"unknown similarity mode {mode!r}; expected one of {', '.join(SIMILARITY_MODES)}")


def similarity(query: Tensor, gallery: Tensor, mode: SimilarityMode = "mean") -> Tensor:
    """Score every query against every gallery item.

    query:   [Bq, Q, E] or [Bq, E]
    gallery: [N, K, E] or [N, E]
    mode:
      "mean":             token-mean query . token-mean gallery item (CoVR-2's dot product of means)
      "max_target_token": max over gallery tokens k of (token-mean query . gallery token k) (BLIP-2 ITC);
                          needs a token gallery [N, K, E]
      "max_token_pair":   max over query tokens q and gallery tokens k of (query token q . gallery token k)
                          (CoVR-2's CIRR evaluation); needs tokens on both sides
      "uncertainty":      HUG's Gaussian distance, negated: -(||mu_q - mu_c||^2 + ||sigma_c||^2) over tokens x
                          dims; needs query tokens [Bq, Q, E] and a gallery made by `with_variance` [N, Q + 1, E].
                          The query's own ||sigma_q||^2 is left out: the same for every item, it changes
                          no ranking
    returns  [Bq, N]
    """
    check_mode(mode)
    if mode == "mean":
        return pool_tokens(query) @ pool_tokens(gallery).T
    if mode == "uncertainty":
        return -gaussian_distance(query, gallery)
    if gallery.dim() != 3:
        raise ValueError(f"similarity mode {mode!r} needs token-level gallery embeddings [N, K, E], got shape {tuple(gallery.shape)}")
    if mode == "max_target_token":
        return torch.einsum("be,nke->bnk", pool_tokens(query), gallery).amax(dim=-1)
    if query.dim() != 3:
        raise ValueError(f"similarity mode 'max_token_pair' needs query tokens [B, Q, E], got shape {tuple(query.shape)}")
    (b, q, e), (n, k) = query.shape, gallery.shape[:2]
    pairs = query.reshape(b * q, e) @ gallery.reshape(n * k, e).T  # [B*Q, N*K]: one matmul, no einsum copy
    return pairs.view(b, q, n, k).amax(dim=(1, 3))


def with_variance(tokens: Tensor, variance: Callable[[Tensor], Tensor], chunk: int = 4096, device: torch.device | str | None = None) -> Tensor:
    """A gallery for "uncertainty" similarity: tokens [N, Q, E] followed by one row per item whose first
    entry is ||sigma_c||^2 = the sum of `variance(tokens)` [N, Q, E] (a model's `target_variance`,
    run on `device` in chunks of `chunk` items) -> [N, Q + 1, E]."""
    if tokens.dim() != 3:
        raise ValueError(f"similarity 'uncertainty' needs token-level gallery embeddings [N, Q, E], got shape {tuple(tokens.shape)}")
    extra = tokens.new_zeros(tokens.shape[0], 1, tokens.shape[2])
    for start in range(0, tokens.shape[0], chunk):
        part = tokens[start : start + chunk].to(device if device is not None else tokens.device, torch.float32)
        extra[start : start + chunk, 0, 0] = variance(part).flatten(1).sum(1).to(extra.device, extra.dtype)
    return torch.cat([tokens, extra], dim=1)


def gaussian_distance(query: Tensor, gallery: Tensor) -> Tensor:
    """||mu_q - mu_c||^2 + ||sigma_c||^2 for query tokens [Bq, Q, E] and a `with_variance` gallery
    [N, Q + 1, E] -> [Bq, N]."""
    if query.dim() != 3 or gallery.dim() != 3 or gallery.shape[1] != query.shape[1] + 1:
        raise ValueError(
            f"similarity 'uncertainty' needs query tokens [B, Q, E] and a gallery [N, Q + 1, E] from with_variance, "
            f"got {tuple(query.shape)} and {tuple(gallery.shape)}"
        )
    q, mean = query.flatten(1), gallery[:, :-1].flatten(1)
    squared = q.square().sum(1)[:, None] + mean.square().sum(1)[None, :] - 2.0 * q @ mean.T
    return squared + gallery[:, -1, 0][None, :]


def renormalised_mean(tokens: Tensor) -> Tensor:
    """CoVR-2's evaluation target: every token of a frame-pooled target L2-normalised again, then the
    token mean (not re-normalised). [..., Q, E] -> [..., E]; a pooled [N, E] input cannot be
    re-normalised per token and is an error."""
    if tokens.dim() < 3:
        raise ValueError(
            f"per-token re-normalisation needs token embeddings [..., Q, E], got shape {tuple(tokens.shape)} "
            "(a token-mean store: extract it without --mean-tokens)"
        )
    return F.normalize(tokens, dim=-1).mean(dim=-2)


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
