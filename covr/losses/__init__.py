"""Training objectives, chosen by `loss.kind` (conf/loss/):

  hn_nce  covr.losses.contrastive.ContrastiveLoss: HN-NCE over the global batch (CoVR / CoVR-2),
          with the options of the same code: CoVR-2's caption term, ReCALL's intra-group triplet
          term (covr.losses.triplet; conf/loss/recall.yaml), memory-bank negatives
          (covr.losses.memory_bank; loss.memory_bank.size)
  hug     covr.losses.hug.HUGLoss: HUG's Gaussian objective (needs the model's uncertainty heads)

Plain torch: importing this package imports neither transformers nor covr.models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from covr.losses.contrastive import ContrastiveLoss, gather_rows, gather_with_grad, hn_nce
from covr.losses.hug import HUGLoss
from covr.losses.memory_bank import MemoryBank, stable_ids
from covr.losses.triplet import group_triplet_loss

LOSS_KINDS = ("hn_nce", "hug")
CONTRASTIVE_KEYS = ("alpha", "beta", "tau", "video_weight", "caption_weight", "triplet_weight", "triplet_margin", "memory_bank")


def build_objective(cfg: Mapping[str, Any], stage: int = 1, embed_dim: int | None = None) -> nn.Module:
    """The loss module of a `loss` config for a training stage; embed_dim: the embedding width (memory bank).

    Stage 0 (video-caption adaptation of the backbone) has no composed queries: only `hn_nce` applies."""
    kind = cfg.get("kind", "hn_nce")
    if kind not in LOSS_KINDS:
        raise ValueError(f"loss.kind={kind!r} is not one of {', '.join(LOSS_KINDS)}")
    if kind == "hug":
        if stage == 0:
            raise ValueError("loss.kind=hug trains composed queries: stage 0 (video-caption adaptation) uses loss.kind=hn_nce")
        if int((cfg.get("memory_bank") or {}).get("size") or 0) or cfg.get("triplet_weight"):
            raise ValueError("loss.kind=hug has no memory bank or triplet term: set loss.memory_bank.size=0 and loss.triplet_weight=0")
        hug = dict(cfg.get("hug") or {})
        return HUGLoss(**hug, caption_weight=float(cfg.get("caption_weight", 0.0)), alpha=cfg.get("alpha", 1.0), beta=cfg.get("beta", 0.5), tau=cfg.get("tau", 0.07))
    if stage == 0 and cfg.get("triplet_weight"):
        raise ValueError("the triplet term groups composed queries by reference video: stage 0 has none (loss.triplet_weight=0)")
    return ContrastiveLoss(**{k: cfg[k] for k in CONTRASTIVE_KEYS if k in cfg}, embed_dim=embed_dim)


__all__ = [
    "LOSS_KINDS",
    "ContrastiveLoss",
    "HUGLoss",
    "MemoryBank",
    "build_objective",
    "gather_rows",
    "gather_with_grad",
    "group_triplet_loss",
    "hn_nce",
    "stable_ids",
]
