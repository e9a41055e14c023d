"""SlotDataLoader: worker batches through recycled shared-memory slots, equal to the ordinary path."""

import gc

import pytest
import torch
from torch.utils.data import Dataset, default_collate

from covr.data.collate import collate_covr
from covr.data.shared_slots import SLOT_KEY, SharedSlots, SlotDataLoader


class Items(Dataset):
    """Deterministic items with per-item frame counts (padding) and sizes that may grow with the index."""

    def __init__(self, n: int = 48, grow_after: int | None = None) -> None:
        self.n, self.grow_after = n, grow_after

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(index)
        side = 8 if self.grow_after is None or index < self.grow_after else 20
        frames = 1 + index % 3
        return {
            "reference_frames": torch.randint(0, 256, (frames, 3, side, side), generator=g, dtype=torch.uint8),
            "target_weights": torch.rand(frames, generator=g),
            "edit": f"edit {index}",
            "index": index,
        }


def expected_batches(dataset: Dataset, batch_size: int) -> list[dict]:
    return [collate_covr([dataset[i] for i in range(s, min(s + batch_size, len(dataset)))]) for s in range(0, len(dataset), batch_size)]


def assert_batch_equal(got: dict, want: dict) -> None:
    assert SLOT_KEY not in got and set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
        else:
            assert got[key] == value, key


def assert_batches_equal(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_batch_equal(g, w)


def check_epoch(loader, want: list[dict]) -> None:
    """Compare batch by batch, dropping each one as a training loop does."""
    count = 0
    for count, batch in enumerate(loader, 1):
        assert_batch_equal(batch, want[count - 1])
    assert count == len(want)


@pytest.mark.parametrize("persistent", [True, False])
def test_slot_batches_equal_the_ordinary_path_and_reuse_slots(persistent):
    dataset = Items()
    loader = SlotDataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_covr, persistent_workers=persistent)
    want = expected_batches(dataset, 4)
    for _ in range(3):
        check_epoch(loader, want)
    stats = loader.slots.stats
    # each worker process sends its first batch the ordinary way (its slots learn the size from it)
    first_batches = 2 if persistent else 6
    assert stats["fallback_batches"] == first_batches and stats["slot_batches"] == 3 * len(want) - first_batches
    gc.collect()
    assert int(loader.slots.busy.sum()) == 0  # every slot released once its batch died


def test_spawned_workers_share_the_slots():
    """spawn / forkserver workers receive the slot tables by pickling (macOS and Windows default)."""
    dataset = Items()
    loader = SlotDataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_covr, persistent_workers=True,
                            multiprocessing_context="spawn")  # fmt: skip
    want = expected_batches(dataset, 4)
    for _ in range(2):
        check_epoch(loader, want)
    assert loader.slots.stats == {"slot_batches": 2 * len(want) - 2, "fallback_batches": 2}


def test_batches_kept_alive_are_never_overwritten():
    dataset = Items()
    loader = SlotDataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_covr, persistent_workers=True, slots=2)
    want = expected_batches(dataset, 4)
    kept = [list(loader) for _ in range(2)]  # 24 batches held: far more than 2 workers x 2 slots
    for epoch in kept:
        assert_batches_equal(epoch, want)  # still intact after the workers moved on
    assert loader.slots.stats["fallback_batches"] > 2  # workers found their slots held and fell back
    del kept, epoch
    gc.collect()
    before = loader.slots.stats["slot_batches"]
    check_epoch(loader, want)
    assert loader.slots.stats["slot_batches"] >= before + 2  # released slots are used again (one per worker at least)


def test_slots_grow_for_larger_batches_and_survive_an_abandoned_epoch():
    dataset = Items(n=40, grow_after=20)  # batches 5.. are 6x larger than the first ones
    loader = SlotDataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_covr, persistent_workers=True)
    want = expected_batches(dataset, 4)
    check_epoch(loader, want)
    iterator = iter(loader)
    next(iterator), next(iterator)  # abandon mid-epoch: batches in flight are never unpacked
    del iterator
    gc.collect()
    for _ in range(2):
        check_epoch(loader, want)
    assert loader.slots.stats["fallback_batches"] == 2  # growing slots never sent a batch the ordinary way
    gc.collect()
    assert int(loader.slots.busy.sum()) == 0


def test_collate_without_an_allocator_keeps_torch_path():
    loader = SlotDataLoader(list(range(8)), batch_size=4, num_workers=1, collate_fn=default_collate)
    assert loader.slots is None and [b.tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert SlotDataLoader(Items(), batch_size=4, num_workers=0, collate_fn=collate_covr).slots is None
    assert SlotDataLoader(Items(), batch_size=4, num_workers=1, collate_fn=collate_covr, slots=0).slots is None


def test_collate_places_every_tensor_with_the_allocator():
    items = [Items()[i] for i in range(5)]
    buffer = torch.zeros(1 << 16, dtype=torch.uint8)
    used = [0]

    def empty(shape, dtype):
        nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        start = -(-used[0] // 64) * 64
        used[0] = start + nbytes
        return torch.empty(0, dtype=dtype).set_(buffer.untyped_storage(), start // torch.empty((), dtype=dtype).element_size(), shape)

    batch = collate_covr(items, empty=empty)
    plain = collate_covr(items)
    for key, value in plain.items():
        if isinstance(value, torch.Tensor):
            assert batch[key].untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr(), key
            assert torch.equal(batch[key], value), key


def test_shared_slots_validate_sizes():
    with pytest.raises(ValueError, match="at least one worker"):
        SharedSlots(0, 2)
