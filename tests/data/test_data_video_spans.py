"""Decoding only a time span of a longer video (clips referenced by start / end seconds), with both
decoders: the right frames, a span past the video's end cut at its last frame, one starting after
the end an error naming the file."""

from __future__ import annotations

import numpy as np
import pytest

from covr.data.errors import VideoDecodeError
from covr.data.toy_render import write_mp4
from covr.data.video import decode_video, span_frames

FPS, FRAMES = 5, 20  # a 4 s video; frame t is grey level 10 + 12 t


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("spans") / "long.mp4"
    levels = (10 + 12 * np.arange(FRAMES)).astype(np.uint8)
    write_mp4(np.broadcast_to(levels[:, None, None, None], (FRAMES, 32, 32, 3)).copy(), path, fps=FPS)  # decord needs >= 32 px
    return path


def frame_numbers(frames: np.ndarray) -> list[int]:
    """Which frame each decoded one is, from its grey level (compression moves it by a few levels)."""
    return [int(round((float(f.mean()) - 10) / 12)) for f in frames]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_span_frames_are_the_ones_inside_the_span(video, backend):
    # 2.0 s to 3.0 s = frames 10..14; 5 segment middles = each of them; the middle frame = 12
    assert frame_numbers(decode_video(video, 5, "uniform", backend=backend, span=(2.0, 3.0))) == [10, 11, 12, 13, 14]
    assert frame_numbers(decode_video(video, 1, "middle", backend=backend, span=(2.0, 3.0))) == [12]
    assert frame_numbers(decode_video(video, 2, "uniform", backend=backend, span=(0.4, 1.2))) == [2, 4]  # of frames 2..5 (CoVR's middles)
    # a span running past the end (3.0 s to 9.0 s) keeps frames 15..19
    assert frame_numbers(decode_video(video, 5, "uniform", backend=backend, span=(3.0, 9.0))) == [15, 16, 17, 18, 19]
    with pytest.raises(VideoDecodeError, match=r"long\.mp4.*starts after the video's end"):
        decode_video(video, 3, "uniform", backend=backend, span=(4.5, 6.0))


def test_span_arithmetic():
    assert span_frames(100, 10.0, (2.0, 3.5), "v.mp4") == (20, 15)
    assert span_frames(100, 10.0, (9.0, 12.0), "v.mp4") == (90, 10)  # cut at the end
    assert span_frames(100, 10.0, (2.0, 2.01), "v.mp4") == (20, 1)  # shorter than a frame: its first frame
    with pytest.raises(VideoDecodeError, match="no frame rate"):
        span_frames(100, 0.0, (1.0, 2.0), "v.mp4")
