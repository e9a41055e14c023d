"""Helpers and fixtures shared by the covr.data tests.

A module with a unique name rather than a tests/data/conftest.py: a second module named
``conftest`` would shadow tests/conftest.py for the test files that import from it. Tests
import the fixtures they use from here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from covr.data.toy import COLUMNS, generate_toy_dataset
from covr.data.toy_render import write_mp4


def make_video(path: Path, num_frames: int = 12, size: int = 32, seed: int = 0) -> np.ndarray:
    """Write an mp4 whose frame t has a bright bar at column 2t (frames are distinguishable); returns them."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((num_frames, size, size, 3), dtype=np.uint8)
    frames[:] = rng.integers(0, 120, size=3, dtype=np.uint8)
    for t in range(num_frames):
        frames[t, :, (2 * t) % size : (2 * t) % size + 4] = (250, 250, 250)
    write_mp4(frames, path)
    return frames


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def triplet(ref: str, target: str, edit: str = "make it red", scores: str = "", **extra) -> dict:
    row = {"pth1": ref, "pth2": target, "txt1": f"Caption of {ref}.", "txt2": f"Caption of {target}!",
           "edit": edit, "scores": scores, "sim_txt": "0.9", "sim_vid": "0.8", "person-prob": "0.0"}  # fmt: skip
    row.update(extra)
    return row


@pytest.fixture
def broken_videos(tmp_path: Path) -> dict:
    """Video root with good videos g0..g5 and bad ones: missing, zero-byte, truncated, text renamed .mp4."""
    root = tmp_path / "videos"
    for i in range(6):
        make_video(root / "page" / f"g{i}.mp4", seed=i)
    (root / "page" / "empty.mp4").write_bytes(b"")
    good = (root / "page" / "g0.mp4").read_bytes()
    (root / "page" / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "page" / "text.mp4").write_text("this is not a video\n" * 20)
    return {"root": root, "good": [f"page/g{i}" for i in range(6)]}


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    """A small toy dataset (seconds to make) shared by the tests of one session."""
    out = tmp_path_factory.mktemp("toy")
    return generate_toy_dataset(out, seed=3, num_train=1000, num_val=20, num_test=40, num_frames=8, image_size=32)
