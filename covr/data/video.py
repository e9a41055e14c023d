"""Frame decoding: mp4 through decord (PyAV as fallback), still images through PIL.

Every reader returns uint8 frames [F, H, W, 3] (RGB). A still image is a one-frame video, so
composed *image* retrieval goes through the same ``load_frames`` call.
Any failure (missing, empty, truncated, not a video) raises ``VideoDecodeError`` with the path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
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


def uniform_indices(num_total: int, num_frames: int) -> list[int]:
    """CoVR's frame choice (its `sample_frames`, shared with BLIP / ALPRO video loaders): the
    integer bounds b_i = int(i * n / S) of S = min(F, n) segments, the middle (b_i + b_{i+1} - 1) // 2
    of each; with fewer frames than F (n < F) those n frames repeat, as CoVR's do, kept in time order
    (CoVR cycles them; the pooled target is the same). At n = 100, F = 15: 2, 9, 16, 22, ..."""
    segments = min(num_frames, num_total)
    bounds = [int(b) for b in np.linspace(0, num_total, segments + 1).astype(int)]
    middles = [(bounds[i] + bounds[i + 1] - 1) // 2 for i in range(segments)]
    return sorted((middles * num_frames)[:num_frames])


def sample_indices(
    num_total: int, num_frames: int, strategy: Sampling, generator: np.random.Generator | None = None
) -> list[int]:
    """Frame indices to decode from a video of ``num_total`` frames.

    middle:  [n // 2] (one frame, as CoVR's reference frame)
    uniform: the middles of F equal integer segments, as CoVR samples them (``uniform_indices``)
    random:  F == 1: one frame uniformly at random; F > 1: one random frame in each of F segments
    """
    if num_total < 1:
        raise ValueError(f"cannot sample from a video with {num_total} frames")
    if strategy == "middle":
        return [num_total // 2]
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if strategy == "uniform":
        return uniform_indices(num_total, num_frames)
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


Span = tuple[float, float]  # (start, end) in seconds of a clip inside a longer video


def span_frames(total: int, fps: float, span: Span, path: Path) -> tuple[int, int]:
    """(first frame, frame count) of the span [start, end) s in a video of `total` frames at `fps`.

    A span running past the video's end is cut at its last frame (as ffmpeg cutting a clip does);
    one starting at or after the end, or a video without a frame rate, is a VideoDecodeError."""
    start, end = span
    if not fps or fps <= 0:
        raise VideoDecodeError(path, "no frame rate: cannot locate a time span")
    first = max(int(start * fps), 0)
    if first >= total:
        raise VideoDecodeError(path, f"span {start:g}-{end:g} s starts after the video's end ({total} frames at {fps:g} fps)")
    last = min(int(end * fps), total)  # exclusive
    return first, max(last - first, 1)  # a span shorter than one frame still gives its first frame


def _indices(total: int, num_frames: int, strategy: Sampling, generator, span: Span | None, fps: float, path: Path) -> list[int]:
    if span is None:
        return sample_indices(total, num_frames, strategy, generator)
    first, count = span_frames(total, fps, span, path)
    return [first + i for i in sample_indices(count, num_frames, strategy, generator)]


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


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration: decord's C++ code prints its own
    "ERROR opening: ..." line for every bad file, whatever its log level, and covr already
    reports the failure in one line of its own (the same text is in decord's exception)."""
    with _STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def _decode_decord(path: Path, num_frames: int, strategy: Sampling, generator, span: Span | None = None) -> np.ndarray:
    with _quiet_stderr():
        reader = decord.VideoReader(str(path), num_threads=1)
    total = len(reader)
    if total < 1:
        raise RuntimeError("container reports no frames")
    indices = _indices(total, num_frames, strategy, generator, span, reader.get_avg_fps() if span else 0.0, path)
    return reader.get_batch(indices).asnumpy()  # [F, H, W, 3]


def _decode_pyav(path: Path, num_frames: int, strategy: Sampling, generator, span: Span | None = None) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        declared = stream.frames
        fps = float(stream.average_rate or 0) if span else 0.0
        if declared > 0:  # decode only up to the last needed frame
            indices = _indices(declared, num_frames, strategy, generator, span, fps, path)
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
    indices = _indices(len(frames), num_frames, strategy, generator, span, fps, path)
    return np.stack([frames[i] for i in indices])


def decode_video(
    path: str | Path,
    num_frames: int = 1,
    strategy: Sampling = "middle",
    generator: np.random.Generator | None = None,
    backend: Literal["auto", "decord", "pyav"] = "auto",
    span: Span | None = None,
) -> np.ndarray:
    """Decode sampled frames of a video file -> uint8 [F, H, W, 3].

    backend "auto" tries decord and falls back to PyAV when decord is missing or fails on the file.
    span: (start, end) seconds: sample only inside that part of the video (see `span_frames`).
    """
    path = Path(path)
    _check_file(path)
    if backend in ("auto", "decord") and decord is not None:
        state = generator.bit_generator.state if generator is not None and strategy == "random" else None
        try:
            return _decode_decord(path, num_frames, strategy, generator, span)
        except Exception as error:  # decord raises RuntimeError / DECORDError on bad input
            if backend == "decord":
                raise VideoDecodeError(path, f"decord: {str(error).splitlines()[0][:200]}") from None
            log.debug("decord failed on %s (%s); trying PyAV", path, error)
            if state is not None:  # PyAV must draw the same random frames decord would have
                generator.bit_generator.state = state
    elif backend == "decord":
        raise VideoDecodeError(path, "decord is not installed")
    try:
        return _decode_pyav(path, num_frames, strategy, generator, span)
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
    span: Span | None = None,
) -> np.ndarray:
    """Frames of a video (or of its `span`, see `decode_video`), or an image as a one-frame video
    -> uint8 [F, H, W, 3] (F = 1 for images)."""
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return load_image(path)
    return decode_video(path, num_frames, strategy, generator, span=span)


def file_problem(path: str | Path) -> str | None:
    """Cheap up-front check: "missing", "empty" or None when the file exists and is non-empty."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    return "empty" if size == 0 else None
