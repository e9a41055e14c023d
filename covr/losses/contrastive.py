"""Contrastive losses: HN-NCE (Radenovic et al., 2023) as CoVR uses it, with global-batch negatives,
optional memory-bank negatives and ReCALL's intra-group triplet term.

S = q @ t.T / tau. Row i: the positive j = i has weight alpha; each negative j != i has weight
    w_ij = (B - 1) * exp(beta * S_ij) / sum_{k != i} exp(beta * S_ik)
    loss_i = log(sum_j w_ij * exp(S_ij)) - S_ii
averaged over rows; the same over columns (targets -> queries); the two directions are summed.
beta = 0 gives InfoNCE (symmetric cross-entropy).

With a memory bank (covr.losses.memory_bank) the rows (queries -> targets) also see the bank's
past targets as negatives: row i's negatives are the batch's B - 1 and its n_i usable bank
entries, the HN-NCE weights are taken over all of them, (B - 1 + n_i) * exp(beta S_ij) / sum_k
exp(beta S_ik), and a bank entry's term is further multiplied by the row's bank scale m_ik
(entropy weighting; 0 = not usable). The columns (targets -> queries) are unchanged: the bank
holds no queries.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from covr.losses.memory_bank import MemoryBank, stable_ids
from covr.losses.triplet import group_triplet_loss
from covr.similarity import pool_tokens


def _hn_nce_rows(logits: Tensor, alpha: float, beta: float, bank_logits: Tensor | None = None, bank_scale: Tensor | None = None) -> Tensor:
    """Mean over rows of log(sum_j w_ij exp(S_ij)) - S_ii, computed in log space. logits [B, B];
    bank_logits [B, K] extra negatives with multipliers bank_scale [B, K] (0 = left out)."""
    b = logits.shape[0]
    positives = logits.diagonal()
    values, usable = logits, ~torch.eye(b, dtype=torch.bool, device=logits.device)  # [B, B]: negatives are j != i
    log_scale = torch.zeros_like(logits)
    if bank_logits is not None and bank_logits.shape[1]:
        values = torch.cat([values, bank_logits], dim=1)
        usable = torch.cat([usable, bank_scale > 0], dim=1)
        log_scale = torch.cat([log_scale, bank_scale.clamp_min(1e-30).log()], dim=1)
    count = usable.sum(dim=1, keepdim=True).to(logits.dtype)
    if not bool((count > 0).all()):  # one row and no bank: only the positive term
        return (positives - positives).mean() + math.log(alpha)
    neg_beta = (beta * values).masked_fill(~usable, float("-inf"))  # masked after the product: beta = 0 stays finite
    log_w = count.log() + neg_beta - torch.logsumexp(neg_beta, dim=1, keepdim=True)  # -inf where left out
    terms = torch.cat([(math.log(alpha) + positives)[:, None], log_w + log_scale + values.masked_fill(~usable, 0.0)], dim=1)
    return (torch.logsumexp(terms, dim=1) - positives).mean()


def hn_nce(query: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 0.5, tau: float = 0.07,
           bank: Tensor | None = None, bank_scale: Tensor | None = None) -> Tensor:  # fmt: skip
    """HN-NCE between matching rows of query [B, E] and target [B, E] (row i's positive is target i);
    bank [K, E] with bank_scale [B, K]: extra negatives of the query -> target direction."""
    if alpha <= 0:
        raise ValueError(f"HN-NCE alpha must be > 0, got {alpha}")
    with torch.autocast(query.device.type, enabled=False):  # bf16/fp16 autocast would run the matmul in half precision
        logits = (query.float() @ target.float().T) / tau
        bank_logits = (query.float() @ bank.float().T) / tau if bank is not None else None
        return _hn_nce_rows(logits, alpha, beta, bank_logits, bank_scale) + _hn_nce_rows(logits.T, alpha, beta)


# backends whose reduce-scatter the gather's backward uses; elsewhere (gloo: CPU runs, small) one all_reduce
REDUCE_SCATTER_BACKENDS = {"nccl", "xccl"}


class _AllGather(torch.autograd.Function):
    """all_gather [b, ...] -> [world, b, ...] whose backward gives each rank the sum over ranks of the
    gradient of its own slice (what DDP's gradient averaging then divides). Not
    torch.distributed.nn's all_gather (deprecated): on gloo it emulates reduce-scatter with
    all_to_all, after which gloo processes abort at exit now and then ("terminate called without an
    active exception", seen in 8 of 22 two-process runs)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = x.new_empty(dist.get_world_size(), *x.shape)
        dist.all_gather(list(out.unbind(0)), x)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        if dist.get_backend() in REDUCE_SCATTER_BACKENDS:
            own = grad.new_empty(grad.shape[1:])
            reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor  # renamed in torch 2.13
            reduce_scatter(own, grad.flatten(0, 1))
            return own
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


def _gather(x: Tensor) -> Tensor:
    """Concatenate `x` [b_r, ...] of every process in rank order (padded to the largest b_r for the
    collective, the padding cut off again); where `x` requires grad, gradients flow back to each
    rank's slice."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    sizes = _AllGather.apply(torch.tensor(x.shape[0], device=x.device)).tolist()
    most = max(sizes)
    padded = torch.cat([x, x.new_zeros(most - x.shape[0], *x.shape[1:])]) if x.shape[0] < most else x
    chunks = _AllGather.apply(padded.contiguous()).unbind(0)
    return torch.cat([chunk[:size] for chunk, size in zip(chunks, sizes)], dim=0)


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate `x` [b_r, ...] from every process r in rank order -> [sum_r b_r, ...].

    Gradients flow back to each rank's own slice (summed over the ranks that used it), so a loss
    computed identically on every rank from the gathered batch, with DDP's gradient averaging,
    gives exactly the gradient of one process holding the whole batch. Ranks may hold different
    numbers of rows (a test batch that dropped a sample, even none at all): rows are padded to the
    largest count for the collective and the padding is cut off again."""
    return _gather(x)


def gather_rows(x: Tensor) -> Tensor:
    """`gather_with_grad` without autograd: for ids, detached embeddings and other plain data."""
    return _gather(x.detach())


class ContrastiveLoss(nn.Module):
    """CoVR / CoVR-2 objective over the global batch:
    video_weight * HN-NCE(query, target video) + caption_weight * HN-NCE(query, target caption)
    (+ triplet_weight * ReCALL's intra-group triplet term; memory-bank negatives in the video term).

    query [b, (Q,) E] and targets are pooled over tokens (CoVR-2's mean-pooled dot product).
    memory_bank: {size, entropy_weighting, weight} (size 0 = none); needs `embed_dim`."""

    def __init__(self, alpha: float = 1.0, beta: float = 0.5, tau: float = 0.07, video_weight: float = 1.0, caption_weight: float = 0.0,
                 triplet_weight: float = 0.0, triplet_margin: float = 0.2, memory_bank: dict[str, Any] | None = None,
                 embed_dim: int | None = None):  # fmt: skip
        super().__init__()
        self.alpha, self.beta, self.tau = alpha, beta, tau
        self.video_weight, self.caption_weight = video_weight, caption_weight
        self.triplet_weight, self.triplet_margin = triplet_weight, triplet_margin
        bank = dict(memory_bank or {})
        self.bank: MemoryBank | None = None
        if int(bank.get("size") or 0) < 0:
            raise ValueError(f"loss.memory_bank.size must be >= 0 (0 = no bank), got {bank['size']}")
        if int(bank.get("size") or 0) > 0:
            if embed_dim is None:
                raise ValueError("a memory bank needs the embedding width (embed_dim)")
            self.bank = MemoryBank(int(bank["size"]), embed_dim, bool(bank.get("entropy_weighting", True)), float(bank.get("weight", 1.0)))

    @property
    def needs_ids(self) -> bool:
        """Whether forward needs the batch's reference / target ids (triplet groups, bank duplicates)."""
        return bool(self.triplet_weight) or self.bank is not None

    def forward(self, query: Tensor, target: Tensor, target_caption: Tensor | None = None,
                reference_ids: list[str] | None = None, target_ids: list[str] | None = None) -> dict[str, Tensor]:  # fmt: skip
        q = gather_with_grad(pool_tokens(query))
        t = gather_with_grad(pool_tokens(target))
        targets = gather_rows(stable_ids(target_ids, q.device)) if self.needs_ids else None
        bank = scale = None
        if self.bank is not None:
            bank, scale = self.bank.negatives(q.detach(), targets, self.tau)
        losses = {"video": hn_nce(q, t, self.alpha, self.beta, self.tau, bank, scale)}
        total = self.video_weight * losses["video"]
        if self.caption_weight:
            if target_caption is None:
                raise ValueError("caption_weight > 0 needs target caption features")
            losses["caption"] = hn_nce(q, gather_with_grad(target_caption), self.alpha, self.beta, self.tau)
            total = total + self.caption_weight * losses["caption"]
        if self.triplet_weight:
            groups = gather_rows(stable_ids(reference_ids, q.device))
            losses["triplet"] = group_triplet_loss(F.normalize(q, dim=-1), F.normalize(t, dim=-1), groups, targets, self.triplet_margin)
            total = total + self.triplet_weight * losses["triplet"]
        if self.bank is not None:
            losses["bank_used"] = (scale > 0).float().sum(dim=1).mean().detach()  # usable bank negatives per row
            if self.training:  # after the loss: this batch's targets are negatives from the next step on
                self.bank.push(t.detach(), targets)
        losses["loss"] = total
        return losses
