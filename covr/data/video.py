"""Frame decoding: mp4 through decord (PyAV as fallback), still images through PIL.

Every reader returns uint8 frames [F, H, W, 3] (RGB). A still image is a one-frame video, so
composed *image* retrieval goes through the same ``load_frames`` call.
Any failure (missing, empty, truncated, not a video) raises ``VideoDecodeError`` with the path.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Literal

import numpy as np

from covr.data.errors import VideoDecodeError

try:  # decord has no wheels for every platform; PyAV is the portable fallback
    import decord

    decord.logging.set_level(decord.logging.QUIET)
except Exception:  # pragma: no cover - depends on the platform
    decord = None

log = logging.getLogger(__name__)

Sampling = Literal["middle", "uniform", "random"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def sample_indices(
    num_total: int, num_frames: int, strategy: Sampling, generator: np.random.Generator | None = None
) -> list[int]:
    """Frame indices to decode from a video of ``num_total`` frames.

    middle:  [n // 2] (one frame, as CoVR's reference frame)
    uniform: floor((i + 0.5) * n / F) for i < F, the middles of F equal segments
    random:  F == 1: one frame uniformly at random; F > 1: one random frame in each of F segments
    """
    if num_total < 1:
        raise ValueError(f"cannot sample from a video with {num_total} frames")
    if strategy == "middle":
        return [num_total // 2]
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if strategy == "uniform":
        return [int((i + 0.5) * num_total / num_frames) for i in range(num_frames)]
    if strategy == "random":
        rng = generator if generator is not None else np.random.default_rng()
        if num_frames == 1:
            return [int(rng.integers(num_total))]
        out = []
        for i in range(num_frames):
            start = i * num_total // num_frames
            stop = max((i + 1) * num_total // num_frames, start + 1)  # empty segment when F > n
            out.append(min(int(rng.integers(start, stop)), num_total - 1))
        return out
    raise ValueError(f"unknown frame sampling {strategy!r}; expected 'middle', 'uniform' or 'random'")


def _check_file(path: Path) -> None:
    try:
        info = os.stat(path)  # one system call: this runs twice per training sample
    except FileNotFoundError:
        raise VideoDecodeError(path, "no such file") from None
    except OSError as error:
        raise VideoDecodeError(path, f"cannot stat ({error.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise VideoDecodeError(path, "not a regular file")
    if info.st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def load_image(path: str | Path) -> np.ndarray:
    """A still image as a one-frame video: uint8 [1, H, W, 3]."""
    from PIL import Image

    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))[None]  # a writable copy (np.asarray would be read-only)
    except Exception as error:  # PIL raises several unrelated types
        raise VideoDecodeError(path, f"not a readable image ({type(error).__name__}: {error})") from None


def _decode_decord(path: Path, num_frames: int, strategy: Sampling, generator) -> np.ndarray:
    reader = decord.VideoReader(str(path), num_threads=1)
    total = len(reader)
    if total < 1:
        raise RuntimeError("container reports no frames")
    indices = sample_indices(total, num_frames, strategy, generator)
    return reader.get_batch(indices).asnumpy()  # [F, H, W, 3]


def _decode_pyav(path: Path, num_frames: int, strategy: Sampling, generator) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        declared = stream.frames
        if declared > 0:  # decode only up to the last needed frame
            indices = sample_indices(declared, num_frames, strategy, generator)
            wanted = set(indices)
            found: dict[int, np.ndarray] = {}
            decoded = 0
            for i, frame in enumerate(container.decode(stream)):
                decoded = i + 1
                if i in wanted:
                    found[i] = frame.to_ndarray(format="rgb24")
                if i >= indices[-1] and len(found) == len(wanted):
                    break
            if len(found) < len(wanted):
                raise VideoDecodeError(path, f"truncated: container declares {declared} frames, decoded only {decoded}")
            return np.stack([found[i] for i in indices])
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise VideoDecodeError(path, "no decodable frames")
    indices = sample_indices(len(frames), num_frames, strategy, generator)
    return np.stack([frames[i] for i in indices])


def decode_video(
    path: str | Path,
    num_frames: int = 1,
    strategy: Sampling = "middle",
    generator: np.random.Generator | None = None,
    backend: Literal["auto", "decord", "pyav"] = "auto",
) -> np.ndarray:
    """Decode sampled frames of a video file -> uint8 [F, H, W, 3].

    backend "auto" tries decord and falls back to PyAV when decord is missing or fails on the file.
    """
    path = Path(path)
    _check_file(path)
    if backend in ("auto", "decord") and decord is not None:
        state = generator.bit_generator.state if generator is not None and strategy == "random" else None
        try:
            return _decode_decord(path, num_frames, strategy, generator)
        except Exception as error:  # decord raises RuntimeError / DECORDError on bad input
            if backend == "decord":
                raise VideoDecodeError(path, f"decord: {str(error).splitlines()[0][:200]}") from None
            log.debug("decord failed on %s (%s); trying PyAV", path, error)
            if state is not None:  # PyAV must draw the same random frames decord would have
                generator.bit_generator.state = state
    elif backend == "decord":
        raise VideoDecodeError(path, "decord is not installed")
    try:
        return _decode_pyav(path, num_frames, strategy, generator)
    except VideoDecodeError:
        raise
    except Exception as error:  # av.error.* subclasses, ValueError from odd containers
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0][:200]
        raise VideoDecodeError(path, f"{type(error).__name__}: {reason}") from None


def load_frames(
    path: str | Path,
    num_frames: int = 1,
    strategy: Sampling = "middle",
    generator: np.random.Generator | None = None,
) -> np.ndarray:
    """Frames of a video, or an image as a one-frame video -> uint8 [F, H, W, 3] (F = 1 for images)."""
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return load_image(path)
    return decode_video(path, num_frames, strategy, generator)


def file_problem(path: str | Path) -> str | None:
    """Cheap up-front check: "missing", "empty" or None when the file exists and is non-empty."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    return "empty" if size == 0 else None
