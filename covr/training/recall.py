"""Validation recall during training: queries against the set of their split's targets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def recall_against_gallery(
    query: Tensor, target: Tensor, reference_ids: Sequence[str], target_ids: Sequence[str], ks: Sequence[int] = (1, 5, 10, 50)
) -> dict[str, float]:
    """R@K (percent) of pooled queries [N, E] against the gallery of unique target ids.

    target [N, E] holds each row's target embedding (the first row of an id defines it); the
    gallery entry equal to a query's own reference video is masked, as in WebVid-CoVR's protocol.
    Ties rank the lower gallery index first (the same rule as covr.eval)."""
    gallery_ids: dict[str, int] = {}
    first_rows = []
    for row, tid in enumerate(target_ids):
        if tid not in gallery_ids:
            gallery_ids[tid] = len(gallery_ids)
            first_rows.append(row)
    gallery = target[first_rows]  # [G, E]
    scores = query @ gallery.T  # [N, G]
    rows = torch.arange(len(target_ids))
    truth = torch.tensor([gallery_ids[t] for t in target_ids])
    own = torch.tensor([gallery_ids.get(r, -1) for r in reference_ids])
    has_own = own >= 0
    scores[rows[has_own], own[has_own]] = float("-inf")
    positive = scores[rows, truth][:, None]
    index = torch.arange(gallery.shape[0])[None]
    rank = ((scores > positive) | ((scores == positive) & (index < truth[:, None]))).sum(1)  # 0 = first
    out = {f"R{k}": float((rank < k).float().mean() * 100) for k in ks}
    out["gallery_size"] = float(gallery.shape[0])
    return out
