"""Contrastive losses: HN-NCE (Radenovic et al., 2023) as CoVR uses it, with global-batch negatives.

S = q @ t.T / tau. Row i: the positive j = i has weight alpha; each negative j != i has weight
    w_ij = (B - 1) * exp(beta * S_ij) / sum_{k != i} exp(beta * S_ik)
    loss_i = log(sum_j w_ij * exp(S_ij)) - S_ii
averaged over rows; the same over columns (targets -> queries); the two directions are summed.
beta = 0 gives InfoNCE (symmetric cross-entropy).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from covr.similarity import pool_tokens


def _hn_nce_rows(logits: Tensor, alpha: float, beta: float) -> Tensor:
    """Mean over rows of log(sum_j w_ij exp(S_ij)) - S_ii, computed in log space. logits [B, B]."""
    b = logits.shape[0]
    diag = torch.eye(b, dtype=torch.bool, device=logits.device)
    positives = logits.diagonal()
    if b == 1:
        return (positives - positives).mean() + math.log(alpha)  # only the positive term
    neg_beta = (beta * logits).masked_fill(diag, float("-inf"))
    log_w = math.log(b - 1) + neg_beta - torch.logsumexp(neg_beta, dim=1, keepdim=True)  # [B, B], -inf on diag
    log_w = torch.where(diag, torch.full_like(logits, math.log(alpha)), log_w)
    return (torch.logsumexp(log_w + logits, dim=1) - positives).mean()


def hn_nce(query: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 0.5, tau: float = 0.07) -> Tensor:
    """HN-NCE between matching rows of query [B, E] and target [B, E] (row i's positive is target i)."""
    if alpha <= 0:
        raise ValueError(f"HN-NCE alpha must be > 0, got {alpha}")
    with torch.autocast(query.device.type, enabled=False):  # bf16/fp16 autocast would run the matmul in half precision
        logits = (query.float() @ target.float().T) / tau
        return _hn_nce_rows(logits, alpha, beta) + _hn_nce_rows(logits.T, alpha, beta)


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate `x` [b_r, ...] from every process r in rank order -> [sum_r b_r, ...].

    Gradients flow back to each rank's own slice (summed over the ranks that used it), so a loss
    computed identically on every rank from the gathered batch, with DDP's gradient averaging,
    gives exactly the gradient of one process holding the whole batch. Ranks may hold different
    numbers of rows (a test batch that dropped a sample, even none at all): rows are padded to the
    largest count for the collective and the padding is cut off again."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    world = dist.get_world_size()
    count = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    most = max(sizes)
    if all(size == most for size in sizes):
        return torch.cat(all_gather(x.contiguous()), dim=0)
    padded = torch.cat([x, x.new_zeros(most - x.shape[0], *x.shape[1:])]) if x.shape[0] < most else x
    chunks = all_gather(padded.contiguous())
    return torch.cat([chunk[:size] for chunk, size in zip(chunks, sizes)], dim=0)


class ContrastiveLoss(nn.Module):
    """CoVR / CoVR-2 objective over the global batch:
    video_weight * HN-NCE(query, target video) + caption_weight * HN-NCE(query, target caption).

    query [b, (Q,) E] and targets are pooled over tokens (CoVR-2's mean-pooled dot product)."""

    def __init__(self, alpha: float = 1.0, beta: float = 0.5, tau: float = 0.07, video_weight: float = 1.0, caption_weight: float = 0.0):
        super().__init__()
        self.alpha, self.beta, self.tau = alpha, beta, tau
        self.video_weight, self.caption_weight = video_weight, caption_weight

    def forward(self, query: Tensor, target: Tensor, target_caption: Tensor | None = None) -> dict[str, Tensor]:
        q = gather_with_grad(pool_tokens(query))
        losses = {"video": hn_nce(q, gather_with_grad(pool_tokens(target)), self.alpha, self.beta, self.tau)}
        total = self.video_weight * losses["video"]
        if self.caption_weight:
            if target_caption is None:
                raise ValueError("caption_weight > 0 needs target caption features")
            losses["caption"] = hn_nce(q, gather_with_grad(target_caption), self.alpha, self.beta, self.tau)
            total = total + self.caption_weight * losses["caption"]
        losses["loss"] = total
        return losses

