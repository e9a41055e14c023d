import numpy as np
import pytest
from PIL import Image

from covr.data import video
from covr.data.errors import CovrDataError, VideoDecodeError
from covr.data.video import decode_video, load_frames, sample_indices

from helpers_data import broken_videos, make_video  # noqa: F401 (fixture)


@pytest.mark.parametrize("n", [1, 2, 7, 12, 15, 16, 30, 100, 301])
@pytest.mark.parametrize("f", [1, 3, 15, 22])
def test_uniform_indices_follow_covrs_segment_middles(n, f):
    """Written out from CoVR's rule: S = min(F, n) segments with bounds np.linspace(0, n, S + 1) cut to
    int (float rounding included: at n=30, S=22 it differs from i*n//S), the middle (start + end - 1) // 2
    of each; when n < F the n frames repeat (kept in time order)."""
    s = min(f, n)
    bounds = [int(b) for b in np.linspace(0, n, s + 1).astype(int)]
    middles = [(bounds[i] + bounds[i + 1] - 1) // 2 for i in range(s)]
    assert sample_indices(n, f, "uniform") == sorted((middles * f)[:f])


def test_uniform_indices_known_values():
    assert sample_indices(100, 15, "uniform") == [2, 9, 16, 22, 29, 36, 42, 49, 56, 62, 69, 76, 82, 89, 96]
    assert sample_indices(12, 15, "uniform") == [0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]


@pytest.mark.parametrize("n", [1, 2, 9, 10, 301])
def test_middle_index_is_n_over_2(n):
    assert sample_indices(n, 1, "middle") == [n // 2]
    assert sample_indices(n, 5, "middle") == [n // 2]  # middle is always one frame


def test_random_indices_stay_in_their_segments_and_follow_the_generator():
    n, f = 100, 8
    for seed in range(20):
        got = sample_indices(n, f, "random", np.random.default_rng(seed))
        assert got == sample_indices(n, f, "random", np.random.default_rng(seed))
        assert all(i * n // f <= idx < (i + 1) * n // f for i, idx in enumerate(got))
    singles = {sample_indices(10, 1, "random", np.random.default_rng(s))[0] for s in range(200)}
    assert singles == set(range(10))
    assert all(0 <= i < 3 for i in sample_indices(3, 8, "random", np.random.default_rng(0)))  # F > n


def test_bad_sampling_arguments():
    with pytest.raises(ValueError, match="unknown frame sampling"):
        sample_indices(10, 1, "first")
    with pytest.raises(ValueError):
        sample_indices(0, 1, "uniform")


@pytest.mark.skipif(video.decord is None, reason="decord not installed")
def test_decord_and_pyav_agree(tmp_path):
    path = tmp_path / "v.mp4"
    frames = make_video(path, num_frames=12, size=32)
    a = decode_video(path, 15, "uniform", backend="decord")
    b = decode_video(path, 15, "uniform", backend="pyav")
    assert a.shape == b.shape == (15, 32, 32, 3) and a.dtype == b.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    expected = frames[sample_indices(12, 15, "uniform")].astype(int)
    assert np.abs(a.astype(int) - expected).mean() < 4  # the right frames (lossy codec)


def test_random_sampling_is_the_same_with_either_backend(tmp_path):
    path = tmp_path / "v.mp4"
    make_video(path, num_frames=12)
    a = decode_video(path, 4, "random", np.random.default_rng(5), backend="auto")
    b = decode_video(path, 4, "random", np.random.default_rng(5), backend="pyav")
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


@pytest.mark.parametrize("name", ["missing.mp4", "empty.mp4", "truncated.mp4", "text.mp4"])
@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_bad_files_raise_video_decode_error(broken_videos, name, backend):
    path = broken_videos["root"] / "page" / name
    with pytest.raises(VideoDecodeError) as info:
        decode_video(path, 15, "uniform", backend=backend)
    assert isinstance(info.value, CovrDataError)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_image_is_a_one_frame_video(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    frames = load_frames(tmp_path / "x.png", 15, "uniform")
    assert frames.shape == (1, 20, 30, 3)
    np.testing.assert_array_equal(frames[0], pixels)
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(VideoDecodeError, match="bad.jpg"):
        load_frames(tmp_path / "bad.jpg")
