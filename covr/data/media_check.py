"""Up-front file checks: does a media file exist, hold bytes, and open as an image or a video?

Used before anything is encoded (evaluation, the WebVid-CoVR test split), so a bad file fails a
run in seconds instead of after a gallery has been encoded.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from covr.data.video import IMAGE_SUFFIXES, decord, file_problem

log = logging.getLogger(__name__)
NOT_FOUND = "file not found"
EMPTY = "empty file (0 bytes)"


def media_problem(path: str | Path) -> str | None:
    """None when `path` is a non-empty regular file that opens as an image or a video; else why not.

    Opening reads the container / image header (and a PNG's chunk checksums), not the pixels."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return NOT_FOUND
    except OSError as error:
        return f"cannot stat ({error.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return EMPTY
    try:
        if Path(path).suffix.lower() in IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(path) as image:
                image.verify()
        elif decord is not None:
            decord.VideoReader(str(path), num_threads=1)
        else:
            import av

            with av.open(str(path)) as container:
                if not container.streams.video:
                    return "does not open (no video stream)"
    except Exception as error:  # each decoder raises its own types
        lines = str(error).strip().splitlines()
        return f"does not open ({type(error).__name__}: {lines[0][:160] if lines else ''})"
    return None


def file_problem_opening(path: str | Path, open_file: bool = True) -> str | None:
    """The dataset's reason codes: "missing", "empty", "unreadable" (does not open, only checked
    with `open_file`) or None."""
    problem = file_problem(path)
    if problem is None and open_file and media_problem(path) is not None:
        problem = "unreadable"
    return problem


def file_problems(paths: Sequence[str | Path], workers: int = 16) -> dict[str, str]:
    """{path: reason} for every path that fails `media_problem` (each distinct path checked once)."""
    unique = list(dict.fromkeys(str(p) for p in paths))
    if len(unique) > 1000:
        log.info("checking %d files before encoding", len(unique))
    with ThreadPoolExecutor(workers) as pool:  # stat / open latency dominates on network file systems
        found = pool.map(media_problem, unique, chunksize=64)
        return {path: reason for path, reason in zip(unique, found) if reason is not None}
