"""Batched, parallel decoding of gallery / query files into model-ready frames.

An image is a one-frame video. A file that cannot be read does not stop the loader: its batch
reports it in `failures`, and the caller decides (skip and count a gallery item, or fail / drop a
query).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from covr.data.collate import pad_frames
from covr.data.transforms import TestTransform
from covr.data.errors import CovrDataError
from covr.eval.media import Media, load_media
from covr.progress import progress


def _load_frames(item: Media, num_frames: int, strategy: str) -> np.ndarray | Tensor:
    """uint8 frames [F, H, W, 3] (an image is one frame; a clip is its span); raises on any unreadable item."""
    return load_media(item, num_frames, strategy)


# what FrameDataset does to a frame (part of gallery cache keys: a change here invalidates old caches)
PREPROCESSING = "TestTransform: uint8 bicubic resize (antialiased), CLIP-normalised float32"


@dataclass
class FrameBatch:
    """indices [B] into the path list; frames [B, F, 3, S, S]; frame_mask [B, F] (True = real frame).

    frames / frame_mask are None when every item of the batch failed; failures: (index, reason).
    """

    indices: Tensor
    frames: Tensor | None
    frame_mask: Tensor | None
    failures: list[tuple[int, str]]


class FrameDataset(Dataset):
    """Decodes paths[i] into normalised frames [F, 3, size, size] (F <= num_frames).

    strategy: covr.data.video's frame sampling ("middle": one frame; "uniform": the middles of
    num_frames equal segments).
    """

    def __init__(self, paths: Sequence[Path], image_size: int, num_frames: int = 1, strategy: str = "uniform") -> None:
        self.paths, self.image_size, self.num_frames, self.strategy = list(paths), image_size, num_frames, strategy
        self.transform = TestTransform(image_size)  # as training's val / target frames: uint8 bicubic resize (PIL's), CLIP-normalised

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, Tensor | None, str | None]:
        path = self.paths[index]
        try:
            frames = self.transform(_load_frames(path, self.num_frames, self.strategy))
            if frames.dim() != 4 or frames.shape[0] == 0:
                raise ValueError(f"decoded to shape {tuple(frames.shape)}, expected [F>0, 3, S, S]")
            return index, frames[: self.num_frames], None
        except Exception as error:  # any decoder failure marks this one file unreadable
            reason = str(error) if isinstance(error, CovrDataError) else f"{path}: {type(error).__name__}: {error}"
            return index, None, reason


def collate_frames(items: list[tuple[int, Tensor | None, str | None]]) -> FrameBatch:
    """Pad the readable items to the longest frame count; collect the unreadable ones."""
    good = [(i, x) for i, x, _ in items if x is not None]
    failures = [(i, reason) for i, x, reason in items if x is None]
    if not good:
        return FrameBatch(torch.zeros(0, dtype=torch.long), None, None, failures)
    frames, mask = pad_frames([x for _, x in good])  # [B, F, 3, S, S], [B, F]
    return FrameBatch(torch.tensor([i for i, _ in good]), frames, mask, failures)


def iterate_frames(
    paths: Sequence[Path],
    image_size: int,
    num_frames: int = 1,
    strategy: str = "uniform",
    batch_size: int = 32,
    num_workers: int = 0,
    description: str = "",
) -> Iterator[FrameBatch]:
    """FrameBatches over `paths` in order, decoded by `num_workers` processes, with a progress bar."""
    loader = DataLoader(
        FrameDataset(paths, image_size, num_frames, strategy),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_frames,
        shuffle=False,
    )
    yield from progress(loader, description or "encode", unit="batches")
