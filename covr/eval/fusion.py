"""Score fusions of training-free composed retrieval pipelines, over precomputed artifacts
(../shared/guide/seed-methods.md). Pure tensor code: every formula is checked against an
independent loop implementation (tests/eval/test_eval_fusion.py); covr.eval.fusion_inputs feeds
them from files keyed by id, covr.eval.rerank applies them inside the evaluator.

n(.) is L2 normalisation; embeddings are [.., E] rows in the retriever's space (E_I image, E_T text).

- Paracosm: score = (w_m n(E_I(m) + E_T(d_m)) + w_t n(E_T(t))) . (n(E_I(x)) + n(E_I(x~))), with m the
  generated "mental image", d_m its description, t the modification text, x a gallery item, x~ its
  generated twin; (w_m, w_t) = (0.3, 0.7).
- XR, stage 1: per imagined target description d_v, s_v(x) = a cos(d_v, E_I(x)) + (1 - a) cos(d_v,
  E_T(caption(x))), a = 0.85; the variants fused by reciprocal-rank fusion, sum_v 1 / (k + rank_v(x))
  (k = 60, rank from 1). Stage 2: the top T (100) of stage 1 re-scored as (verification questions
  passed) x (stage-1 score min-max normalised over those T), equal products in stage-1 order;
  everything else -inf.
- CVSI: weighted parts, score = sum_p sum_r alpha_p beta_r cos(q_p, g_r) over query parts q_p
  (modified caption, pseudo-token prompt, reference image) and gallery parts g_r (image, caption);
  the double sum equals (sum_p alpha_p n(q_p)) . (sum_r beta_r n(g_r)), which is how it is computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

PARACOSM_WEIGHTS = (0.3, 0.7)  # (mental image + description, modification text)
XR_IMAGE_WEIGHT = 0.85  # stage 1: description vs image; 1 - this vs the gallery caption
RRF_K = 60
XR_RERANK_TOP = 100
XR_TIE_BREAK = 1e-6  # far below any real difference of the stage-2 product (stage-1 order among equal ones)
# CVSI's weights as the guide lists them: query parts (modified caption, pseudo-token prompt,
# reference image) against gallery parts (image, caption)
CVSI_WEIGHTS = {
    "fashioniq": ((0.2, 0.6, 0.2), (0.9, 0.1)),
    "cirr": ((0.6, 0.4), (0.8, 0.2)),  # two query weights: the first two parts (no reference image term)
    "circo": ((0.6, 0.4), (0.8, 0.2)),
}


def n(x: Tensor) -> Tensor:
    """L2 normalisation over the last dimension (a zero row stays zero)."""
    return F.normalize(x.float(), dim=-1)


def paracosm_query(mental_image: Tensor, mental_description: Tensor, text: Tensor, weights: Sequence[float] = PARACOSM_WEIGHTS) -> Tensor:
    """Paracosm's query side [B, E] from E_I(m), E_T(d_m), E_T(t) (each [B, E])."""
    return weights[0] * n(mental_image.float() + mental_description.float()) + weights[1] * n(text)


def paracosm_target(gallery: Tensor, twins: Tensor) -> Tensor:
    """Paracosm's gallery side [N, E]: n(E_I(x)) + n(E_I(x~))."""
    return n(gallery) + n(twins)


def paracosm_scores(
    mental_image: Tensor, mental_description: Tensor, text: Tensor, gallery: Tensor, twins: Tensor,
    weights: Sequence[float] = PARACOSM_WEIGHTS,
) -> Tensor:  # fmt: skip
    """[B, N] Paracosm scores (module docstring)."""
    return paracosm_query(mental_image, mental_description, text, weights) @ paracosm_target(gallery, twins).T


def xr_variant_scores(descriptions: Tensor, gallery_images: Tensor, gallery_captions: Tensor, image_weight: float = XR_IMAGE_WEIGHT) -> Tensor:
    """XR stage 1 per variant: descriptions [B, V, E] vs gallery images and captions [N, E] -> [B, V, N]."""
    d = n(descriptions)
    return image_weight * d @ n(gallery_images).T + (1.0 - image_weight) * d @ n(gallery_captions).T


def ranks(scores: Tensor) -> Tensor:
    """1-based rank of every entry along the last dimension, ordered by (score desc, index asc)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    out = torch.empty_like(order)
    positions = torch.arange(1, scores.shape[-1] + 1, device=scores.device).expand_as(order)
    return out.scatter_(-1, order, positions)


def reciprocal_rank_fusion(scores: Tensor, k: float = RRF_K, valid: Tensor | None = None) -> Tensor:
    """[B, V, N] per-variant scores -> [B, N] sum over the valid variants ([B, V] bool) of 1 / (k + rank)."""
    fused = 1.0 / (k + ranks(scores).double())  # float64: stage 2 min-max-normalises differences of ~1e-5
    if valid is not None:
        fused = fused * valid[..., None].float()
    return fused.sum(dim=1)


def min_max(x: Tensor) -> Tensor:
    """(x - min) / (max - min) along the last dimension; all-equal rows become 1 (every entry is the best)."""
    low, high = x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)
    span = high - low
    return torch.where(span > 0, (x - low) / torch.where(span > 0, span, torch.ones_like(span)), torch.ones_like(x))


def xr_rerank(stage1: Tensor, passed: Tensor, top: int = XR_RERANK_TOP, tie_break: float = XR_TIE_BREAK) -> Tensor:
    """XR stage 2: [B, N] stage-1 scores and questions passed -> [B, N]: the top `top` of stage 1
    (ties to the lower index) scored passed x min-max(stage 1 over them), the rest -inf. Equal
    stage-2 scores (every candidate that passes no question scores 0) keep their stage-1 order, as
    a stable re-sort of the stage-1 list does: position i of T adds tie_break x (T - i) / T."""
    top = min(top, stage1.shape[-1])
    order = torch.sort(stage1, dim=-1, descending=True, stable=True).indices[:, :top]  # [B, T]
    kept = stage1.gather(1, order)
    keep_order = tie_break * (top - torch.arange(top, device=stage1.device, dtype=torch.float64)) / top
    out = torch.full_like(stage1, float("-inf"), dtype=torch.float64)
    return out.scatter_(1, order, passed.double().gather(1, order) * min_max(kept.double()) + keep_order)


def fuse_parts(parts: Tensor, weights: Sequence[float]) -> Tensor:
    """[M, P, E] parts -> [M, E] sum_p w_p n(part_p) (a part of weight 0 may be all zeros)."""
    if parts.shape[1] != len(weights):
        raise ValueError(f"{parts.shape[1]} parts but {len(weights)} weights")
    w = torch.tensor([float(x) for x in weights], device=parts.device)
    return (n(parts) * w[None, :, None]).sum(dim=1)


def weighted_part_scores(query_parts: Tensor, query_weights: Sequence[float], gallery_parts: Tensor, gallery_weights: Sequence[float]) -> Tensor:
    """CVSI: [B, P, E] query parts and [N, R, E] gallery parts -> [B, N] sum_pr alpha_p beta_r cos(q_p, g_r)."""
    return fuse_parts(query_parts, query_weights) @ fuse_parts(gallery_parts, gallery_weights).T
