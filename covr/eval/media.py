"""What a query or gallery item is read from: a file (image or video), a time span of a longer
video (`Clip`), or a folder of frame images (datasets released as extracted frames).

A `Clip` is path-like (`os.fspath` gives its video file, so file checks, suffixes and caption
look-ups see the file) and prints as `<file>#t=<start>,<end>` (the media-fragment notation), which
is what cache keys and messages use, so two spans of one video are two items.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from covr.data.errors import VideoDecodeError
from covr.data.media_check import file_problems
from covr.data.video import IMAGE_SUFFIXES, load_frames, load_image, sample_indices


@dataclass(frozen=True)
class Clip:
    """The part [start, end) seconds of a video file."""

    file: Path
    start: float
    end: float

    def __post_init__(self) -> None:
        if not (0 <= self.start < self.end):
            raise ValueError(f"{self.file}: a clip needs 0 <= start < end, got {self.start}, {self.end}")

    def __fspath__(self) -> str:
        return os.fspath(self.file)

    def __str__(self) -> str:
        return f"{self.file}#t={self.start:g},{self.end:g}"


Media = Union[Path, Clip]


def frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder, in name order (zero-padded names sort in time order)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_media(item: Media, num_frames: int, strategy: str) -> np.ndarray:
    """uint8 frames [F, H, W, 3] of a file, a clip's span, or a frame folder (sampled like a video's
    frames: "middle" one frame, "uniform" the middles of F equal segments; a frame folder also
    takes "first": its first F frames, FineCVR's choice), in time order."""
    path = Path(item)
    if strategy == "first" and not path.is_dir():
        raise VideoDecodeError(path, "frame sampling 'first' is for frame folders; use 'uniform' for videos")
    if isinstance(item, Clip):
        return load_frames(item.file, num_frames, strategy, span=(item.start, item.end))
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise VideoDecodeError(path, "frame folder holds no images")
        chosen = range(min(num_frames, len(files))) if strategy == "first" else sample_indices(len(files), num_frames, strategy)
        return np.concatenate([load_image(files[i]) for i in chosen])
    return load_frames(path, num_frames, strategy)


def media_key(item: Media) -> str:
    """The text naming an item in caches and messages (a clip includes its span)."""
    return str(item)


def media_problems(items: Sequence[Media]) -> dict[str, str]:
    """{media_key(item): reason} for every item whose file does not exist or does not open (a clip:
    its video file; a frame folder: its first frame). Spans past a video's end fail at decoding."""
    files: dict[str, str] = {}
    for item in items:
        path = Path(os.fspath(item))
        if path.is_dir():
            first = frame_files(path)[:1]
            files[media_key(item)] = str(first[0]) if first else str(path / "(no frames)")
        else:
            files[media_key(item)] = str(path)
    problems = file_problems(list(files.values()))
    return {key: problems[file] for key, file in files.items() if file in problems}
