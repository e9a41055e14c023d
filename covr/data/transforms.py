"""Frame transforms: CLIP normalisation, test-time resize, training augmentation.

Frames travel through covr as float tensors [..., 3, H, W], CLIP-normalised.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from covr.data.augment import PHOTOMETRIC_OPS, apply_ops, crop_box, draw_ops, resize_uint8, resized_crop

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def as_tensor(frames: Tensor | np.ndarray) -> Tensor:
    """A numpy array (read-only ones included, e.g. from PIL) or tensor -> tensor, copying only when needed."""
    if isinstance(frames, np.ndarray):
        if not (frames.flags.writeable and frames.flags.c_contiguous):
            frames = np.array(frames, order="C")  # torch refuses to wrap read-only memory
        return torch.from_numpy(frames)
    return frames


def to_float_chw(frames: Tensor | np.ndarray) -> Tensor:
    """uint8 [..., H, W, 3] (decoder layout) -> float [..., 3, H, W] in [0, 1]."""
    frames = as_tensor(frames)
    if frames.dtype != torch.uint8:
        raise TypeError(f"expected uint8 frames [..., H, W, 3], got dtype {frames.dtype}")
    return frames.movedim(-1, -3).float().div_(255.0)


def normalize(frames: Tensor) -> Tensor:
    """CLIP mean/std normalisation of float frames [..., 3, H, W] in [0, 1]."""
    mean = torch.tensor(CLIP_MEAN, dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    return (frames - mean) / std


_MEAN_CPU = torch.tensor(CLIP_MEAN).view(3, 1, 1)
_INV_STD_CPU = 1.0 / torch.tensor(CLIP_STD).view(3, 1, 1)
_SCALE_U8 = _INV_STD_CPU / 255.0  # uint8 value v -> (v / 255 - mean) / std = v * _SCALE_U8 + _SHIFT
_SHIFT = -_MEAN_CPU * _INV_STD_CPU


def _normalize_(frames: Tensor) -> Tensor:
    """In-place ``normalize`` for float32 CPU frames the caller owns (the data-loading hot path)."""
    if frames.dtype != torch.float32 or frames.device.type != "cpu":
        return normalize(frames)
    return frames.sub_(_MEAN_CPU).mul_(_INV_STD_CPU)


def resize_square(frames: Tensor, size: int) -> Tensor:
    """Bicubic resize of float frames [..., 3, H, W] to [..., 3, size, size] (no crop, as CoVR's test transform)."""
    lead = frames.shape[:-3]
    x = frames.reshape(-1, *frames.shape[-3:])
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)
    return x.reshape(*lead, 3, size, size)


def test_transform(frames: Tensor | np.ndarray, size: int) -> Tensor:
    """uint8 [..., H, W, 3] -> normalised float [..., 3, size, size]."""
    return normalize(resize_square(to_float_chw(frames), size))


FrameDtype = Literal["float32", "float16", "uint8"]


def _unit_float(x: Tensor) -> Tensor:
    """uint8 pixels -> contiguous float32 in [0, 1]; float frames pass unchanged."""
    if x.dtype == torch.uint8:
        return torch.mul(x.contiguous(), 1.0 / 255.0)  # one pass: uint8 * float gives float32
    return x


def _finish(x: Tensor, output_dtype: str) -> Tensor:
    """float [F, 3, S, S] in [0, 1] (owned) -> the transform's output dtype."""
    if output_dtype == "uint8":
        return x.mul_(255.0).round_().to(torch.uint8, memory_format=torch.contiguous_format)
    x = _normalize_(x.contiguous())
    return x.half() if output_dtype == "float16" else x


def to_model_input(frames: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Batch frames from any ``output_dtype`` -> normalised float frames [..., 3, S, S] on their device.

    uint8 (pixel values) is CLIP-normalised here, float16 is cast, float32 passes unchanged; so a
    training step may call this on every batch whatever the loader was configured to send.
    """
    if frames.dtype == torch.uint8:
        mean = torch.tensor(CLIP_MEAN, device=frames.device, dtype=dtype).view(3, 1, 1)
        std = torch.tensor(CLIP_STD, device=frames.device, dtype=dtype).view(3, 1, 1)
        return (frames.to(dtype) / 255.0 - mean) / std
    return frames.to(dtype)


def _check_dtype(output_dtype: str) -> None:
    if output_dtype not in ("float32", "float16", "uint8"):
        raise ValueError(f"output_dtype must be 'float32', 'float16' or 'uint8', got {output_dtype!r}")


class TestTransform:
    """uint8 frames [F, H, W, 3] -> [F, 3, size, size] (plain bicubic resize, in uint8 as PIL), CLIP-normalised.

    output_dtype: "float32" (default) / "float16": normalised frames; "uint8": pixel values, to be
    normalised on the device by ``to_model_input`` (4x less to send from DataLoader workers).
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, image_size: int, output_dtype: FrameDtype = "float32") -> None:
        _check_dtype(output_dtype)
        self.image_size, self.output_dtype = image_size, output_dtype

    def __call__(self, frames: Tensor | np.ndarray, generator: np.random.Generator | None = None) -> Tensor:
        frames = as_tensor(frames)
        if frames.dtype != torch.uint8:
            raise TypeError(f"expected uint8 frames [..., H, W, 3], got dtype {frames.dtype}")
        lead, (h, w) = frames.shape[:-3], frames.shape[-3:-1]
        x = frames.reshape(-1, h, w, 3).movedim(-1, -3)  # uint8 [N, 3, H, W] viewing the decoder's layout
        x = resize_uint8(x, self.image_size).contiguous()  # resize in uint8 (4-5x faster), then one layout copy
        x = x.reshape(*lead, *x.shape[-3:])
        if self.output_dtype == "uint8":
            return x
        x = x.float().mul_(_SCALE_U8).add_(_SHIFT)  # fused (v / 255 - mean) / std
        return x.half() if self.output_dtype == "float16" else x

    def __repr__(self) -> str:
        return f"TestTransform(image_size={self.image_size}, output_dtype={self.output_dtype!r})"


class TrainTransform:
    """uint8 frames [F, H, W, 3] -> [F, 3, size, size], one random draw shared by all frames of the clip.

    RandomResizedCrop(scale, ratio, bicubic) -> optional horizontal flip -> RandAugment-style
    photometric ops -> CLIP normalisation (output_dtype as in TestTransform). Flip defaults to
    off: captions that say "left" / "right" become wrong under a flip.
    """

    def __init__(
        self,
        image_size: int,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        horizontal_flip: bool = False,
        num_ops: int = 2,
        magnitude: float = 5.0,
        ops: tuple[str, ...] | None = None,
        output_dtype: FrameDtype = "float32",
    ) -> None:
        ops = tuple(ops) if ops is not None else tuple(PHOTOMETRIC_OPS)
        unknown = [name for name in ops if name not in PHOTOMETRIC_OPS]
        if unknown:
            raise ValueError(f"unknown augmentation ops {unknown}; choose from {sorted(PHOTOMETRIC_OPS)}")
        _check_dtype(output_dtype)
        self.image_size, self.scale, self.ratio = image_size, tuple(scale), tuple(ratio)
        self.horizontal_flip, self.num_ops, self.magnitude, self.ops = horizontal_flip, num_ops, magnitude, ops
        self.output_dtype = output_dtype

    def __call__(self, frames: Tensor | np.ndarray, generator: np.random.Generator | None = None) -> Tensor:
        return self.apply_many([frames], [generator])[0]

    def apply_many(self, clips: list, generators: list[np.random.Generator | None]) -> list[Tensor]:
        """Transform several clips, each with its own generator: equal to calling the transform on
        each. Crops run clip by clip; the photometric ops and the output conversion run once per
        group of small clips (fewer, larger torch calls: a dataset's ``__getitems__`` uses this).
        Groups hold about a megabyte of frames, so they stay in the CPU caches."""
        frame_values = 3 * self.image_size**2
        out: list[Tensor] = []
        for chunk in _cache_sized_chunks([frame_values * len(clip) for clip in clips]):
            pieces, plans = [], []
            for i in chunk:
                generator = generators[i] if generators[i] is not None else np.random.default_rng()
                x = as_tensor(clips[i]).movedim(-1, -3)  # [F, 3, H, W], still uint8: crop before converting
                box = crop_box(x.shape[-2], x.shape[-1], self.scale, self.ratio, generator)
                x = resized_crop(x, box, self.image_size)  # [F, 3, S, S], uint8 stays uint8
                if self.horizontal_flip and generator.random() < 0.5:
                    x = x.flip(-1)
                pieces.append(x)
                plans.append(draw_ops(self.num_ops, self.magnitude, self.ops, generator) if self.num_ops > 0 else [])
            out += self._photometric(pieces, plans)
        return out

    def _photometric(self, pieces: list[Tensor], plans: list) -> list[Tensor]:
        """Photometric ops + output conversion of several cropped clips in one go."""
        counts = [len(piece) for piece in pieces]
        if all(piece.dtype == torch.uint8 for piece in pieces):
            x = _unit_float(torch.cat(pieces))  # one conversion for every frame
        else:
            x = torch.cat([_unit_float(piece) for piece in pieces])
        x = apply_ops(x, plans, counts)
        return list(_finish(x, self.output_dtype).split(counts))

    def __repr__(self) -> str:
        return (
            f"TrainTransform(image_size={self.image_size}, scale={self.scale}, ratio={self.ratio}, "
            f"horizontal_flip={self.horizontal_flip}, num_ops={self.num_ops}, magnitude={self.magnitude}, "
            f"output_dtype={self.output_dtype!r})"
        )


CHUNK_VALUES = 1 << 18  # ~1 MB of float32: several 64 px frames, one 224 px frame


def _cache_sized_chunks(sizes: list[int], limit: int = CHUNK_VALUES) -> list[list[int]]:
    """Consecutive groups of indices whose sizes add up to at most ``limit`` (a larger item alone).

    Batching the photometric ops saves per-call overhead only while the batch stays in the CPU
    caches; past that, every op streams it through memory and batching is slower than one by one.
    """
    chunks: list[list[int]] = []
    total = limit + 1
    for i, size in enumerate(sizes):
        if total + size > limit:
            chunks.append([])
            total = 0
        chunks[-1].append(i)
        total += size
    return chunks


def build_transform(train: bool, image_size: int, **options) -> TrainTransform | TestTransform:
    """Frame transform factory (Hydra-friendly): train -> TrainTransform(**options), else TestTransform.

    Options: output_dtype (both); scale, ratio, horizontal_flip, num_ops, magnitude, ops (train only).
    """
    if train:
        return TrainTransform(image_size, **options)
    extra = sorted(set(options) - {"output_dtype"})
    if extra:
        raise ValueError(f"the test transform takes only output_dtype, got {extra}")
    return TestTransform(image_size, **options)
