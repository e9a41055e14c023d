"""A memory bank of past target embeddings, used as extra negatives (covr's generic version of
CSMCIR's idea, arXiv 2601.03728, whose exact selection and refresh rules are not public).

* FIFO: after every training step the global batch's targets (gathered over all processes, so
  every rank holds the same bank) are written over the oldest entries; `size` entries at most.
* No duplicates of the current batch: an entry showing the same target video as any target of the
  current global batch is left out for that step (it is a positive of one row and already an
  in-batch negative of the others).
* Entropy weighting: for query i, p_i = softmax(q_i . bank / tau) over its usable entries and
  h_i = H(p_i) / log(n_i) in [0, 1]; every bank negative of row i gets the multiplier
  weight * (1 - h_i) (detached). A query whose bank distribution is peaked faces a few past
  targets it confuses with its own and keeps them at full weight; a query to which the bank is
  uniformly unrelated learns little from it and it fades. `entropy_weighting: false` gives every
  usable entry the multiplier `weight`.
* The bank is made of buffers: it travels in Lightning checkpoints, so a resumed run continues with
  exactly the bank the interrupted one had.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor, nn


def stable_ids(names: list[str] | None, device: torch.device | str = "cpu") -> Tensor:
    """int64 ids [N] of strings (video ids), equal in every process and every run (blake2b)."""
    if names is None:
        raise ValueError("this loss needs the batch's video ids (batch['reference_id'] / batch['target_id'])")
    values = [int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little", signed=True) for name in names]
    return torch.tensor(values, dtype=torch.long, device=device)


class MemoryBank(nn.Module):
    """FIFO queue of `size` target embeddings [size, dim] with their video ids (see the module docstring)."""

    def __init__(self, size: int, dim: int, entropy_weighting: bool = True, weight: float = 1.0):
        super().__init__()
        if size < 1:
            raise ValueError(f"memory bank size must be >= 1, got {size}")
        self.size, self.entropy_weighting, self.weight = int(size), bool(entropy_weighting), float(weight)
        self.register_buffer("embeddings", torch.zeros(size, dim))
        self.register_buffer("ids", torch.zeros(size, dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # entries written so far (<= size)
        self.register_buffer("next", torch.zeros((), dtype=torch.long))  # slot the next entry goes to

    def contents(self) -> tuple[Tensor, Tensor]:
        """(embeddings [n, dim], ids [n]) of the filled entries, oldest first."""
        n = int(self.filled)
        if n < self.size:
            return self.embeddings[:n], self.ids[:n]
        order = torch.roll(torch.arange(self.size, device=self.ids.device), -int(self.next))
        return self.embeddings[order], self.ids[order]

    @torch.no_grad()
    def push(self, embeddings: Tensor, ids: Tensor) -> None:
        """Enqueue [G, dim] (the global batch's targets) and their ids [G]; the oldest entries go."""
        embeddings, ids = embeddings[-self.size :], ids[-self.size :]  # more than the bank holds: the newest
        slots = (int(self.next) + torch.arange(len(ids), device=self.ids.device)) % self.size
        self.embeddings[slots] = embeddings.to(self.embeddings.dtype)
        self.ids[slots] = ids
        self.next.fill_((int(self.next) + len(ids)) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + len(ids)))

    @torch.no_grad()
    def negatives(self, query: Tensor, batch_ids: Tensor, tau: float) -> tuple[Tensor, Tensor]:
        """(bank embeddings [n, dim], multipliers [B, n]) for queries [B, dim] of a batch whose
        targets have `batch_ids` [B']: 0 where an entry shows a current target, else the weight."""
        bank, ids = self.contents()
        bank = bank.clone()  # the loss keeps it for backward, and `push` overwrites the buffer before that
        usable = ~torch.isin(ids, batch_ids)  # [n]
        scale = torch.full((query.shape[0], len(ids)), self.weight, device=query.device) * usable.to(query.dtype)
        count = int(usable.sum())
        if self.entropy_weighting and count > 1:
            logits = (query.float() @ bank.float().T / tau).masked_fill(~usable, float("-inf"))
            p = torch.softmax(logits, dim=1)
            entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=1)  # [B]; left-out entries have p = 0
            scale = scale * (1.0 - entropy / math.log(count))[:, None].clamp(0.0, 1.0)
        return bank.to(query.dtype), scale
