"""Batching of dataset items with variable frame counts, and a sampler that drives epochs."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Sampler, get_worker_info

# per-frame keys padded along dim 0 of each item, and the mask each one produces
FRAME_KEYS = {
    "reference_frames": "reference_frame_mask",
    "target_frames": "target_frame_mask",
    "target_embedding": "target_frame_mask",
}
PADDED_KEYS = {"target_weights"}  # [F] per item, padded with 0


Empty = Callable[[tuple, torch.dtype], Tensor]  # allocator: (shape, dtype) -> uninitialised tensor


def itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def nbytes(shape: tuple, dtype: torch.dtype) -> int:
    """Bytes of a dense tensor of this shape and dtype."""
    return int(torch.Size(shape).numel()) * itemsize(dtype)


def shared_empty(shape: tuple, dtype: torch.dtype) -> Tensor:
    """An uninitialised tensor in a fresh shared-memory segment."""
    storage = torch.UntypedStorage._new_shared(nbytes(shape, dtype))
    return torch.empty(0, dtype=dtype).set_(storage, 0, torch.Size(shape))


def _default_empty(shape: tuple, dtype: torch.dtype) -> Tensor:
    if get_worker_info() is not None:  # in a DataLoader worker: write straight into shared memory,
        return shared_empty(shape, dtype)  # saving the copy made when the batch is sent back
    return torch.empty(shape, dtype=dtype)


def pad_frames(values: list[Tensor], empty: Empty | None = None) -> tuple[Tensor, Tensor]:
    """list of [F_i, ...] -> (padded [B, F_max, ...] zeros after F_i, mask bool [B, F_max], True = real frame).

    empty: allocator for the two outputs (default: shared memory in a DataLoader worker, else the heap).
    """
    empty = empty or _default_empty
    lengths = [v.shape[0] for v in values]
    longest = max(lengths)
    out = empty((len(values), longest, *values[0].shape[1:]), values[0].dtype)
    mask = empty((len(values), longest), torch.bool)
    if all(n == longest for n in lengths):  # common case: one copy, no zero fill
        torch.stack(values, out=out)
        mask.fill_(True)
        return out, mask
    mask.fill_(False)
    for i, (v, n) in enumerate(zip(values, lengths)):
        out[i, :n] = v
        out[i, n:] = 0
        mask[i, :n] = True
    return out, mask


def collate_covr(items: list[dict[str, Any] | None], empty: Empty | None = None) -> dict[str, Any] | None:
    """Batch dataset items; None items (rows whose video failed to decode) are dropped.

    Frame tensors [F_i, ...] become [B, F_max, ...] with ``*_frame_mask`` bool [B, F_max];
    ``target_weights`` are zero-padded; other tensors are stacked; ints become a LongTensor;
    strings stay lists. ``num_dropped`` counts the None items. Returns None if every item was
    dropped (a training step should then return None, which Lightning skips). ``empty``
    allocates every output tensor (see pad_frames; SlotDataLoader passes its slots).
    """
    empty = empty or _default_empty
    kept = [item for item in items if item is not None]
    if not kept:
        return None
    batch: dict[str, Any] = {}
    for key in kept[0]:
        values = [item[key] for item in kept]
        if key in FRAME_KEYS:
            batch[key], batch[FRAME_KEYS[key]] = pad_frames(values, empty)
        elif key in PADDED_KEYS:
            batch[key] = pad_frames(values, empty)[0]
        elif isinstance(values[0], Tensor):
            batch[key] = torch.stack(values, out=empty((len(values), *values[0].shape), values[0].dtype))
        elif isinstance(values[0], int):
            batch[key] = empty((len(values),), torch.long).copy_(torch.tensor(values, dtype=torch.long))
        else:
            batch[key] = values
    batch["num_dropped"] = len(items) - len(kept)
    return batch


class EpochSampler(Sampler[int]):
    """Shuffling sampler that drives epochs, shards by rank, and can resume mid-epoch.

    * ``set_epoch`` (called by Lightning every epoch) reshuffles and re-draws the dataset's
      triplets for that epoch (one per target in ``unique_targets`` mode).
    * Under torch.distributed each rank takes every world-th index of the epoch's order; the order
      is cut (``drop_last``) or padded with its first indices to a multiple of the world size.
    * ``skip(n, epoch)`` drops the first n indices of this rank's next iteration of ``epoch``: a run
      resumed from a mid-epoch checkpoint continues with exactly the samples it had not seen. The
      skip belongs to its epoch: a checkpoint saved on an epoch's last batch asks to skip that whole
      epoch, and must not empty the next one, which the trainer may start directly.
    """

    def __init__(self, dataset, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 num_replicas: int | None = None, rank: int | None = None) -> None:  # fmt: skip
        self.dataset, self.shuffle, self.seed, self.epoch = dataset, shuffle, seed, 0
        self.drop_last, self.num_replicas, self.rank = drop_last, num_replicas, rank
        self._skip: tuple[int | None, int] = (None, 0)  # (epoch it applies to, None = the next one; count)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def skip(self, count: int, epoch: int | None = None) -> None:
        self._skip = (None if epoch is None else int(epoch), int(count))

    def _world(self) -> tuple[int, int]:
        if self.num_replicas is not None:
            return self.num_replicas, self.rank or 0
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def __len__(self) -> int:
        world, _ = self._world()
        n = len(self.dataset)
        return n // world if self.drop_last else -(-n // world)

    def epoch_order(self) -> list[int]:
        """Every position of the current epoch, in the order the epoch visits them (all ranks together);
        a function of (seed, epoch) alone, so every rank and every resumed run computes the same."""
        if not self.shuffle:
            return list(range(len(self.dataset)))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(len(self.dataset), generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        world, rank = self._world()
        order = self.epoch_order()
        total = len(self) * world
        order = order[:total] if self.drop_last else (order + order[: total - len(order)])
        mine = order[rank::world]
        (skip_epoch, skip), self._skip = self._skip, (None, 0)
        return iter(mine[skip:] if skip_epoch in (None, self.epoch) else mine)
