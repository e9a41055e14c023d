"""Batches grouped by reference video (ReCALL's refinement, arXiv 2602.01639): the rows of one
reference video are visited together, so a batch holds whole groups whose queries share their
reference and differ in their edit, and an intra-group loss (covr.losses.triplet) can compare them.

The epoch order is a function of (seed, epoch) alone, like EpochSampler's: positions are shuffled,
gathered by reference (keeping the shuffled order inside each reference), cut into chunks of at most
`group_size`, and the chunks are shuffled. Batches are consecutive slices of that order (global
batch i = positions [i B W, (i + 1) B W) dealt to the W ranks, as EpochSampler deals them), so only
the chunk at a batch boundary can be split between two batches. Everything else is EpochSampler's:
`set_epoch`, rank sharding, and `skip(n, epoch)` for an exact mid-epoch resume.

Which reference a position shows: with `epoch_mode: all_triplets` a position is a CSV row; with
`unique_targets` it is a target video whose row is drawn per epoch (WebVidCoVRDataset.row_of), so
the grouping is recomputed every epoch (a Python loop over the positions, ~2 s per 100k), and
since each target contributes one row most groups then hold a single row: ReCALL's groups need
`all_triplets`. A row that the dataset swaps in for an undecodable one (another row of the epoch)
takes its slot in the batch but not its group: its reference differs, and the loss reads the
groups from the batch's reference ids, so it just forms a group of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from covr.data.collate import EpochSampler

References = Callable[[int], np.ndarray]  # epoch -> reference code of every position [N]


def dataset_references(dataset) -> References:
    """The `References` of a WebVidCoVRDataset (its annotation codes of pth1, per position and epoch)."""
    codes = dataset.annotations.reference

    def references(epoch: int) -> np.ndarray:
        if dataset.epoch_mode == "all_triplets":
            return codes[dataset.rows]
        return np.array([codes[dataset.row_of(i, epoch)] for i in range(len(dataset))], dtype=np.int64)

    return references


def grouped_order(references: np.ndarray, group_size: int, generator: torch.Generator) -> np.ndarray:
    """Positions [N] in chunks of <= group_size positions with one reference each, chunks shuffled."""
    n = len(references)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    shuffled = torch.randperm(n, generator=generator).numpy()
    by_reference = np.argsort(references[shuffled], kind="stable")  # gathered by reference, shuffled inside
    positions, refs = shuffled[by_reference], references[shuffled][by_reference]
    first = np.r_[True, refs[1:] != refs[:-1]]  # where each reference's run starts
    run_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    chunk = np.cumsum((np.arange(n) - run_start) % group_size == 0) - 1  # chunk id of every position
    chunk_rank = np.empty(chunk[-1] + 1, dtype=np.int64)
    chunk_rank[torch.randperm(len(chunk_rank), generator=generator).numpy()] = np.arange(len(chunk_rank))
    return positions[np.argsort(chunk_rank[chunk], kind="stable")]


class ReferenceGroupedSampler(EpochSampler):
    """EpochSampler whose epoch order keeps the rows of a reference video together (module docstring)."""

    def __init__(self, dataset, references: References, group_size: int = 4, seed: int = 0, drop_last: bool = True,
                 num_replicas: int | None = None, rank: int | None = None) -> None:  # fmt: skip
        """references: epoch -> reference code per position (`dataset_references(dataset)`)."""
        super().__init__(dataset, shuffle=True, seed=seed, drop_last=drop_last, num_replicas=num_replicas, rank=rank)
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.references, self.group_size = references, int(group_size)

    def epoch_order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        references = np.asarray(self.references(self.epoch))
        if len(references) != len(self.dataset):
            raise ValueError(f"{len(references)} reference codes for {len(self.dataset)} positions")
        return grouped_order(references, self.group_size, generator).tolist()
