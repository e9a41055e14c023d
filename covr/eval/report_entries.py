"""What a visual report shows of a task: sampled queries with their top-k results (`Entry`),
misses first, and thumbnails decoded from the benchmark's files (covr.eval.visual_report writes
the HTML page, covr.eval.contact_sheet the PNG)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image

from covr.eval.datasets.base import Query
from covr.eval.media import Media, load_media

THUMB = 112  # thumbnail box, pixels
REFERENCE_FRAMES = 3  # frames shown of a video reference


@dataclass
class Result:
    """One ranked gallery entry as shown: item id, its file, its score, whether it is correct."""

    item: str
    path: Media | None
    score: float
    correct: bool


@dataclass
class Entry:
    """One sampled query of the report."""

    query: str
    text: str
    reference: str
    reference_path: Media | None
    results: list[Result]
    correct: tuple[str, ...]
    rank: int | None  # 1-based rank of the first correct item in the ranked list (None: not in it)
    ranked: int  # how long the ranked list is (the rank bound when the answer is not in it)
    categories: Mapping[str, str] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return bool(self.correct)

    @property
    def miss(self) -> bool:
        return self.labelled and self.rank != 1


def sample_entries(
    queries: Sequence[Query], ranked_items: Sequence[Sequence[str]], scores: Sequence[Sequence[float]], paths: Mapping[str, Media],
    count: int, top_k: int, seed: int = 0,
) -> list[Entry]:  # fmt: skip
    """`count` queries drawn with a fixed seed, misses first (each group in query order), each with its top_k."""
    chosen = sorted(random.Random(seed).sample(range(len(queries)), min(count, len(queries))))
    entries = []
    for i in chosen:
        q, items = queries[i], list(ranked_items[i])
        correct = q.correct()
        rank = next((r for r, item in enumerate(items, start=1) if item in correct), None)
        results = [Result(item, paths.get(item), float(s), item in correct) for item, s in zip(items[:top_k], scores[i][:top_k])]
        entries.append(Entry(q.id, q.text, q.reference, q.reference_path, results, correct, rank, len(items), dict(q.categories)))
    return sorted(entries, key=lambda e: not e.miss)


@lru_cache(maxsize=1024)  # the page and the contact sheet show the same files
def thumbnail(item: Media | None, frames: int = 1, size: int = THUMB) -> tuple[Image.Image, ...]:
    """Up to `frames` RGB thumbnails of an image or video (uniformly spread), or () when unreadable."""
    if item is None:
        return ()
    try:
        decoded = load_media(item, frames, "middle" if frames == 1 else "uniform")
    except Exception:  # an unreadable file shows as a placeholder, it does not stop the report
        return ()
    images = []
    for frame in np.asarray(decoded)[:frames]:
        image = Image.fromarray(frame).convert("RGB")
        image.thumbnail((size, size), Image.Resampling.BICUBIC)
        images.append(image)
    return tuple(images)
