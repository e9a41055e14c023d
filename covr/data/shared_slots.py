"""Recycled shared-memory slots for the batches DataLoader workers send to the trainer.
Hand-written on purpose, because: torch's DataLoader has no way to reuse shared memory between batches, and the fresh segment per batch it uses instead costs several times the collation (measured below).

A plain DataLoader worker puts every batch tensor in a fresh shared-memory segment: the segment
is created and reserved, each of its pages is faulted in on first write, its file descriptor is
passed over a socket, and the main process maps it, uses it once and unmaps it. Per byte that is
cheap, but per batch it adds up: 6.3 ms for a 6 MB toy batch on a 2-core VM (page faults are
expensive in virtual machines), several times the cost of collating it.

``SlotDataLoader`` gives each worker a few slots, allocated once and reused. The collate
function (which must accept ``empty=``, as ``collate_covr`` does) writes the batch straight into a
free slot and the worker sends only offsets and shapes; the main process wraps the slot memory as
tensors without copying, and frees the slot when the last tensor viewing it is garbage
collected. A slot is never written while any tensor of its previous batch is alive: a worker that
finds none of its slots free sends that batch the ordinary way, as does a slot too small for a
batch (it grows for the next one).
"""

from __future__ import annotations

import inspect
import os
import weakref
from functools import partial
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, get_worker_info

from covr.data.collate import itemsize, nbytes, shared_empty

SLOT_KEY = "__shared_slot__"  # batch entry: (pid, worker, slot, generation, storage or None, layout)
_ALIGN = 64


def _round_up(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class _SlotAllocator:
    """``empty(shape, dtype)`` handing out consecutive, aligned pieces of one slot; falls back when full."""

    def __init__(self, storage: torch.UntypedStorage | None, fallback: Callable[[tuple, torch.dtype], Tensor]) -> None:
        self.storage, self.fallback = storage, fallback
        self.capacity = storage.nbytes() if storage is not None else 0
        self.used = 0  # bytes placed in the slot
        self.needed = 0  # bytes the batch would need in a slot (all tensors)

    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        size = nbytes(shape, dtype)
        self.needed += _round_up(size)
        if self.storage is None or self.used + size > self.capacity:
            return self.fallback(shape, dtype)
        out = torch.empty(0, dtype=dtype).set_(self.storage, self.used // itemsize(dtype), torch.Size(shape))
        self.used += _round_up(size)
        return out

    def owns(self, value: Any) -> bool:
        return (
            self.storage is not None
            and isinstance(value, Tensor)
            and value.untyped_storage().data_ptr() == self.storage.data_ptr()
        )


class SharedSlots:
    """The slots of every worker of one DataLoader; ``collate`` runs in workers, ``unpack`` in the main process.

    ``busy`` (shared memory, created before the workers start) holds 1 for a slot whose batch may
    still be in use; workers claim only slots at 0 and the main process resets a slot to 0 when
    the last tensor of its batch dies. Slot memory itself is created lazily by each worker.
    """

    def __init__(self, num_workers: int, slots_per_worker: int, headroom: float = 1.1) -> None:
        if num_workers < 1 or slots_per_worker < 1:
            raise ValueError(f"need at least one worker and one slot, got {num_workers} workers, {slots_per_worker} slots")
        self.busy = torch.zeros(num_workers, slots_per_worker, dtype=torch.int32).share_memory_()
        # the slot memory (worker pid, generation) the main process has mapped, as pid << 24 | generation:
        # a worker sends a slot's storage along with its batch until the main process has it
        self.mapped = torch.zeros(num_workers, slots_per_worker, dtype=torch.int64).share_memory_()
        self._busy, self._mapped = self.busy.numpy(), self.mapped.numpy()
        self.headroom = headroom
        self._worker_state: tuple[int, list, list] | None = None  # worker: (pid, slot storages, slot generations)
        self._wanted = 0  # worker: bytes a slot needs (largest batch seen, with headroom)
        self._views: dict[tuple[int, int, int], tuple[int, np.ndarray]] = {}  # main: (pid, w, s) -> (gen, bytes)
        self._held: set[tuple[int, int]] = set()  # main: slots whose batch has live tensors
        self.stats = {"slot_batches": 0, "fallback_batches": 0}  # main-process counts

    def __getstate__(self) -> dict[str, Any]:  # spawn / forkserver workers: fresh local state
        state = dict(self.__dict__)
        state.update(_busy=None, _mapped=None, _worker_state=None, _views={}, _held=set())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._busy, self._mapped = self.busy.numpy(), self.mapped.numpy()

    # ---- worker side -------------------------------------------------------------------------
    def _local(self) -> tuple[int, list, list]:
        if self._worker_state is None or self._worker_state[0] != os.getpid():  # first call in this worker
            n = self.busy.shape[1]
            self._worker_state = (os.getpid(), [None] * n, [0] * n)
            self._wanted = 0
        return self._worker_state

    def _claim(self, worker: int) -> int | None:
        """The lowest free slot (first fit: slots beyond what the pipeline keeps in flight are never allocated)."""
        free = np.flatnonzero(self._busy[worker] == 0)
        if len(free) == 0:
            return None
        self._busy[worker, free[0]] = 1
        return int(free[0])

    def collate(self, collate_fn: Callable[..., Any], items: list) -> Any:
        """``collate_fn(items, empty=...)`` with its tensors placed in a free slot of this worker."""
        info = get_worker_info()
        if info is None or info.id >= self._busy.shape[0]:
            return collate_fn(items)
        pid, storages, generations = self._local()
        s = self._claim(info.id)
        if s is None:  # every slot still held by the trainer: the ordinary path
            return collate_fn(items, empty=shared_empty)
        if self._wanted > (storages[s].nbytes() if storages[s] is not None else 0):  # (re)allocate a bigger slot
            storages[s] = torch.UntypedStorage._new_shared(self._wanted)
            generations[s] += 1
        allocator = _SlotAllocator(storages[s], shared_empty)
        batch = collate_fn(items, empty=allocator)
        if allocator.needed > allocator.capacity:  # did not fit: later slots get room for it
            self._wanted = max(self._wanted, _round_up(int(allocator.needed * self.headroom)))
        if not isinstance(batch, dict) or allocator.used == 0:
            self._busy[info.id, s] = 0
            return batch
        layout = []
        for key, value in list(batch.items()):
            if allocator.owns(value):
                offset = value.storage_offset() * value.element_size()
                layout.append((key, offset, value.dtype, tuple(value.shape)))
                del batch[key]
        token = _token(pid, generations[s])
        sent = storages[s] if self._mapped[info.id, s] != token else None  # not mapped by the main process yet
        batch[SLOT_KEY] = (pid, info.id, s, generations[s], sent, layout)
        return batch

    # ---- main process ------------------------------------------------------------------------
    def unpack(self, batch: Any) -> Any:
        """Turn a worker's slot reference back into tensors (zero-copy views of the slot)."""
        if not isinstance(batch, dict) or SLOT_KEY not in batch:
            if isinstance(batch, dict):
                self.stats["fallback_batches"] += 1
            return batch
        pid, worker, s, generation, storage, layout = batch.pop(SLOT_KEY)
        key = (pid, worker, s)
        if storage is not None:
            self._views[key] = (generation, torch.empty(0, dtype=torch.uint8).set_(storage).numpy())
            self._mapped[worker, s] = _token(pid, generation)
        known, memory = self._views.get(key, (None, None))
        if known != generation:  # cannot happen: a worker sends the storage until it is acknowledged
            raise RuntimeError(f"loader slot {key}: the main process has generation {known}, the batch needs {generation}")
        end = max(offset + nbytes(shape, dtype) for _, offset, dtype, shape in layout)
        region = memory[:end]  # its own ndarray: freed when the last tensor below is
        whole = torch.from_numpy(region)
        for name, offset, dtype, shape in layout:
            batch[name] = whole[offset : offset + nbytes(shape, dtype)].view(dtype).view(shape)
        del whole
        self._held.add((worker, s))
        weakref.finalize(region, _release, self._busy, self._held, worker, s)
        self.stats["slot_batches"] += 1
        return batch

    def reset_unheld(self) -> None:
        """Free every slot the main process holds no tensors of (batches a finished or abandoned
        iteration never delivered). Call only while no worker is filling a slot."""
        for worker, s in zip(*np.nonzero(self._busy)):
            if (int(worker), int(s)) not in self._held:
                self._busy[worker, s] = 0

    def forget_workers(self, pids: set[int]) -> None:
        """Drop the main process's mappings of slots that belonged to workers no longer running."""
        self._views = {key: value for key, value in self._views.items() if key[0] in pids}


def _token(pid: int, generation: int) -> int:
    return (pid << 24) | generation


def _release(busy: np.ndarray, held: set, worker: int, slot: int) -> None:
    held.discard((worker, slot))
    busy[worker, slot] = 0


class _UnpackingIterator:
    """Wraps a DataLoader iterator: unpacks slot batches (and pins them when the loader pins)."""

    def __init__(self, iterator, slots: SharedSlots, pin: bool) -> None:
        self._iterator, self._slots, self._pin = iterator, slots, pin

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self._iterator)

    def __next__(self) -> Any:
        batch = self._iterator.__next__()
        pin = self._pin and isinstance(batch, dict) and SLOT_KEY in batch
        batch = self._slots.unpack(batch)
        if pin:  # pinned copies of the slot tensors (the DataLoader pinned the rest): the slot is free again at once
            batch = {k: v.pin_memory() if isinstance(v, Tensor) and not v.is_pinned() else v for k, v in batch.items()}
        return batch

    def __getattr__(self, name: str) -> Any:  # _shutdown_workers, _workers, ... of the real iterator
        return getattr(self._iterator, name)


def _accepts_empty(collate_fn: Callable) -> bool:
    """Whether ``collate_fn`` takes the ``empty=`` allocator (collates that do not keep torch's usual path)."""
    try:
        return "empty" in inspect.signature(collate_fn).parameters
    except (TypeError, ValueError):  # builtins, some C callables
        return False


class SlotDataLoader(DataLoader):
    """A DataLoader whose workers send batches through recycled shared-memory slots (see module doc).

    slots: slots per worker (None: prefetch_factor + 2, enough for Lightning, which holds the
    current and the next batch); 0 disables them. The collate function must accept ``empty=``
    (a ``(shape, dtype) -> Tensor`` allocator) and should build its tensors with it, as
    ``covr.data.collate_covr`` does; with another collate function, or without workers, this is a
    plain DataLoader.
    """

    def __init__(self, *args, slots: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.slots: SharedSlots | None = None
        if self.num_workers > 0 and slots != 0 and _accepts_empty(self.collate_fn):
            per_worker = slots if slots is not None else (self.prefetch_factor or 2) + 2
            self.slots = SharedSlots(self.num_workers, per_worker)
            self.collate_fn = partial(self.slots.collate, self.collate_fn)

    def __iter__(self):
        if self.slots is None:
            return super().__iter__()
        self.slots.reset_unheld()  # before the workers get new work: none is filling a slot now
        iterator = super().__iter__()
        workers = getattr(iterator, "_workers", None)
        if workers is not None:
            self.slots.forget_workers({w.pid for w in workers})
        return _UnpackingIterator(iterator, self.slots, pin=self.pin_memory and torch.cuda.is_available())
