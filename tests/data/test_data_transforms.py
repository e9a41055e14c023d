import numpy as np
import pytest
import torch

from covr.data import augment
from covr.data import transforms as T
from covr.data.transforms import CLIP_MEAN, CLIP_STD, TestTransform, TrainTransform, build_transform, normalize, to_model_input


def clip(num_frames=4, size=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)


def test_test_transform_matches_the_reference_function():
    frames = clip(size=32)
    torch.testing.assert_close(TestTransform(32)(frames), T.test_transform(frames, 32), atol=1e-5, rtol=0)
    # resizing happens in uint8 (as PIL does): close to the float reference, in grey levels
    out = TestTransform(24)(frames)
    assert out.shape == (4, 3, 24, 24) and out.dtype == torch.float32
    grey_levels = (out - T.test_transform(frames, 24)).abs() * torch.tensor(CLIP_STD).view(3, 1, 1) * 255
    assert grey_levels.mean() < 1.0 and grey_levels.max() < 10


def test_normalize_uses_clip_statistics():
    x = torch.tensor(CLIP_MEAN).view(3, 1, 1).expand(3, 2, 2)
    assert torch.allclose(normalize(x), torch.zeros(3, 2, 2), atol=1e-6)


def test_train_transform_shape_and_same_draw_for_every_frame():
    one = clip(num_frames=1, seed=1)
    frames = np.repeat(one, 5, axis=0)  # identical frames must stay identical: one crop / op draw per clip
    out = TrainTransform(32)(frames, np.random.default_rng(0))
    assert out.shape == (5, 3, 32, 32) and out.dtype == torch.float32
    assert all(torch.equal(out[0], out[i]) for i in range(5))


def test_train_transform_is_random_but_reproducible_with_a_generator():
    frames = clip()
    t = TrainTransform(32)
    a, b = t(frames, np.random.default_rng(7)), t(frames, np.random.default_rng(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, t(frames, np.random.default_rng(8)))


def test_horizontal_flip_is_off_by_default_and_works_when_on():
    frames = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    frames[:, :, :8] = 255  # white on the left
    plain = TrainTransform(32, scale=(1.0, 1.0), ratio=(1.0, 1.0), num_ops=0)
    for seed in range(10):
        out = plain(frames, np.random.default_rng(seed))
        assert out[0, 0, :, :4].mean() > out[0, 0, :, -4:].mean()
    flipping = TrainTransform(32, scale=(1.0, 1.0), ratio=(1.0, 1.0), num_ops=0, horizontal_flip=True)
    flipped = [flipping(frames, np.random.default_rng(s))[0, 0, 0, 0] < 0 for s in range(40)]
    assert 5 < sum(flipped) < 35


def test_crop_box_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = augment.crop_box(60, 80, (0.5, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
        assert 0.5 * 4800 * 0.9 <= h * w <= 4800 * 1.05
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


@pytest.mark.parametrize("name", sorted(augment.PHOTOMETRIC_OPS))
def test_photometric_ops_keep_range_and_identity_factor(name):
    x = torch.rand(2, 3, 16, 16)
    op = augment.PHOTOMETRIC_OPS[name]
    for factor in (0.3, 1.7):
        y = op(x, factor)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    if name not in ("autocontrast",):
        torch.testing.assert_close(op(x, 1.0), x)


def test_saturation_zero_gives_grey_and_brightness_scales():
    x = torch.rand(1, 3, 8, 8)
    grey = augment.saturation(x, 0.0)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    torch.testing.assert_close(augment.brightness(x, 0.5), x * 0.5)


@pytest.mark.parametrize("train", [True, False])
def test_uint8_and_float16_outputs_match_float32_after_to_model_input(train):
    frames = clip(size=36)
    outs = {d: build_transform(train, 28, output_dtype=d)(frames, np.random.default_rng(3)) for d in ("float32", "float16", "uint8")}
    assert outs["uint8"].dtype == torch.uint8 and outs["float16"].dtype == torch.float16
    for dtype in ("float16", "uint8"):
        torch.testing.assert_close(to_model_input(outs[dtype]), outs["float32"], atol=0.02, rtol=0)
    assert to_model_input(outs["float32"]) is outs["float32"]


def test_build_transform_validates_options():
    assert isinstance(build_transform(True, 32, num_ops=1, magnitude=3), TrainTransform)
    assert isinstance(build_transform(False, 32), TestTransform)
    with pytest.raises(ValueError, match="only output_dtype"):
        build_transform(False, 32, num_ops=2)
    with pytest.raises(ValueError, match="unknown augmentation ops"):
        build_transform(True, 32, ops=("posterize",))
    with pytest.raises(ValueError, match="output_dtype"):
        build_transform(True, 32, output_dtype="int16")


@pytest.mark.filterwarnings("error")
def test_read_only_arrays_are_accepted_without_warnings():
    frames = clip(num_frames=1, size=16)
    frames.flags.writeable = False  # as np.asarray(PIL image) gives
    for transform in (TestTransform(16), TrainTransform(16)):
        assert transform(frames).shape == (1, 3, 16, 16)
    assert T.to_float_chw(frames).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("name, pil_name", [("brightness", "Brightness"), ("contrast", "Contrast"), ("saturation", "Color"), ("sharpness", "Sharpness")])
@pytest.mark.parametrize("factor", [0.55, 1.45])
def test_photometric_ops_match_pil_image_enhance(name, pil_name, factor):
    from PIL import Image, ImageEnhance

    pixels = np.random.default_rng(1).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    expected = np.asarray(getattr(ImageEnhance, pil_name)(Image.fromarray(pixels)).enhance(factor)).astype(int)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    got = (augment.PHOTOMETRIC_OPS[name](x, factor)[0].permute(1, 2, 0) * 255).round().int().numpy()
    assert np.abs(got - expected).max() <= 2


@pytest.mark.parametrize("output_dtype", ["uint8", "float32", "float16"])
def test_apply_many_equals_one_clip_at_a_time(output_dtype):
    rng = np.random.default_rng(5)
    clips = [rng.integers(0, 256, (f, 40, 56, 3), dtype=np.uint8) for f in (1, 1, 3, 1, 2, 1, 1, 1, 1)]
    transform = TrainTransform(32, horizontal_flip=True, output_dtype=output_dtype)
    many = transform.apply_many(clips, [np.random.default_rng(i) for i in range(len(clips))])
    one_by_one = [transform(clip, generator=np.random.default_rng(i)) for i, clip in enumerate(clips)]
    assert [tuple(x.shape) for x in many] == [(len(c), 3, 32, 32) for c in clips]
    for a, b in zip(many, one_by_one):
        assert a.dtype == b.dtype and torch.equal(a, b)
    # groups of clips share torch calls only while they stay about a megabyte
    assert T._cache_sized_chunks([3, 3, 3, 5, 9], limit=6) == [[0, 1], [2], [3], [4]]
    assert T._cache_sized_chunks([]) == []


def test_apply_ops_with_per_clip_plans_equals_separate_calls():
    x = torch.rand(5, 3, 12, 12)
    plans = [[("contrast", 1.45), ("sharpness", 0.55)], [("contrast", 0.55), ("identity", 1.0)],
             [("autocontrast", 1.0), ("brightness", 1.45)]]  # fmt: skip
    counts = [2, 1, 2]
    got = augment.apply_ops(x.clone(), plans, counts)
    starts = [0, 2, 3, 5]
    for i, plan in enumerate(plans):
        want = x[starts[i] : starts[i + 1]].clone()
        for name, factor in plan:
            want = augment.PHOTOMETRIC_OPS[name](want, factor)
        torch.testing.assert_close(got[starts[i] : starts[i + 1]], want, atol=1e-6, rtol=0)


def test_autocontrast_matches_pil_and_keeps_constant_channels():
    from PIL import Image, ImageOps

    pixels = np.random.default_rng(2).integers(40, 200, (16, 12, 3), dtype=np.uint8)
    pixels[..., 2] = 90  # a constant channel: PIL leaves it as it is
    expected = np.asarray(ImageOps.autocontrast(Image.fromarray(pixels))).astype(int)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    got = (augment.autocontrast(x)[0].permute(1, 2, 0) * 255).round().int().numpy()
    assert np.abs(got - expected).max() <= 1 and (got[..., 2] == 90).all()


def test_uint8_resize_reads_decoder_layout_without_a_copy_and_agrees():
    frames = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 48, 80, 3), dtype=np.uint8))
    view = frames.movedim(-1, -3)  # channels-last strides, as decoded
    for size in (32, 96):
        assert torch.equal(augment.resize_uint8(view, size), augment.resize_uint8(view.contiguous(), size))
    out = TestTransform(32, "uint8")(frames)
    assert out.is_contiguous() and torch.equal(out, augment.resize_uint8(view.contiguous(), 32))
