"""Training augmentations in plain torch, applied identically to every frame of one clip.

RandomResizedCrop (torchvision's sampling rule) and a RandAugment-style set of photometric
ops on float frames [F, 3, H, W] in [0, 1]. Randomness comes from an optional
numpy Generator (cheap per draw; the dataset derives one per item from (seed, epoch, row)).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL and torchvision use


Generator = np.random.Generator


def _rng(generator: Generator | None) -> Generator:
    return generator if generator is not None else np.random.default_rng()


def crop_box(
    height: int,
    width: int,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: Generator | None = None,
) -> tuple[int, int, int, int]:
    """Random crop (top, left, h, w) covering scale*area with aspect ratio w/h in ratio (10 tries, then centre)."""
    rng = _rng(generator)
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = rng.random(4)  # one draw per try: area, aspect, top, left
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1)), h, w
    # fallback: largest centred crop whose aspect ratio is inside the range
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def resize_uint8(frames: Tensor, size: int) -> Tensor:
    """Bicubic resize of uint8 frames [F, 3, H, W] -> uint8 [F, 3, size, size], antialiased when shrinking.

    Resizing before the float conversion is 4-5x faster (torch's vectorised uint8 kernels) and
    quantises to 8 bits like PIL, which the original CoVR / BLIP pipelines resize with. Frames
    straight from a decoder ([F, H, W, 3] moved to [F, 3, H, W], i.e. channels-last strides) are
    resized without a layout copy (2-3x faster again at video sizes); the result keeps that layout.
    """
    h, w = frames.shape[-2:]
    if (h, w) == (size, size):
        return frames
    shrink = h > size or w > size
    if frames.stride(-3) != 1:  # not channels-last: torch's kernels want a dense input
        frames = frames.contiguous()
    return F.interpolate(frames, size=(size, size), mode="bicubic", align_corners=False, antialias=shrink)


def resized_crop(frames: Tensor, box: tuple[int, int, int, int], size: int) -> Tensor:
    """Crop frames [F, 3, H, W] to box (top, left, h, w) and resize (bicubic) to [F, 3, size, size].

    uint8 frames stay uint8 (see resize_uint8); float frames come back clamped to [0, 1].
    """
    top, left, h, w = box
    x = frames[..., top : top + h, left : left + w]
    if frames.dtype == torch.uint8:
        return resize_uint8(x, size)
    if (h, w) != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=h > size or w > size)
    return x.float().clamp_(0.0, 1.0)


_GRAY_KERNEL = torch.tensor(_GRAY).view(1, 3, 1, 1)
_GRAY_VECTOR = torch.tensor(_GRAY)


def _gray(x: Tensor) -> Tensor:
    """[F, 3, H, W] -> [F, 1, H, W] luma."""
    kernel = _GRAY_KERNEL if x.dtype == torch.float32 else _GRAY_KERNEL.to(x.dtype)
    return (x * kernel).sum(dim=-3, keepdim=True)


def _blend(x: Tensor, other: Tensor, factor: float | Tensor) -> Tensor:
    """PIL ImageEnhance rule: factor 0 gives ``other``, 1 gives ``x``, >1 extrapolates (other broadcasts)."""
    return torch.lerp(other, x, factor).clamp_(0.0, 1.0)


# factor: a float, or a tensor [F, 1, 1, 1] with one factor per frame (see apply_ops).
def brightness(x: Tensor, factor: float | Tensor) -> Tensor:
    return (x * factor).clamp_(0.0, 1.0)


def contrast(x: Tensor, factor: float | Tensor) -> Tensor:
    """Blend with the frame's mean luma (mean of the channel means, weighted as luma)."""
    mean = x.mean(dim=(-2, -1)) @ _GRAY_VECTOR.to(x.dtype)  # [..., F]
    return _blend(x, mean[..., None, None, None], factor)


def saturation(x: Tensor, factor: float | Tensor) -> Tensor:
    return _blend(x, _gray(x), factor)


def sharpness(x: Tensor, factor: float | Tensor) -> Tensor:
    """Blend with PIL's SMOOTH-kernel blur [[1,1,1],[1,5,1],[1,1,1]]/13; border pixels stay unblurred, as in PIL."""
    if x.shape[-1] < 3 or x.shape[-2] < 3:
        return x
    rows = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]  # horizontal 3-sums [.., H, W-2]
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]  # 3x3 sums [.., H-2, W-2]
    blurred = x.clone()
    blurred[..., 1:-1, 1:-1] = box.add_(x[..., 1:-1, 1:-1], alpha=4.0).div_(13.0)  # (box + 4 centre) / 13
    return _blend(x, blurred, factor)


def autocontrast(x: Tensor, factor: float = 1.0) -> Tensor:
    """Stretch each frame's channels to [0, 1]; a constant channel is left as it is, as PIL does (factor unused)."""
    low = x.amin(dim=(-2, -1), keepdim=True)
    high = x.amax(dim=(-2, -1), keepdim=True)
    flat = high <= low
    scale = (high - low).masked_fill_(flat, 1.0).reciprocal_()
    return (x - low.masked_fill_(flat, 0.0)).mul_(scale).clamp_(0.0, 1.0)


def identity(x: Tensor, factor: float = 1.0) -> Tensor:
    return x


PHOTOMETRIC_OPS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "identity": identity,
    "autocontrast": autocontrast,
    "brightness": brightness,
    "contrast": contrast,
    "saturation": saturation,
    "sharpness": sharpness,
}


OpPlan = list[tuple[str, float]]  # the (op name, factor) list one clip gets


def draw_ops(num_ops: int, magnitude: float, ops: tuple[str, ...], generator: Generator | None = None) -> OpPlan:
    """``num_ops`` ops drawn with replacement, each with factor 1 +- 0.09 * magnitude (BLIP's 0-10 scale)."""
    rng = _rng(generator)
    draws = rng.random(2 * num_ops)  # (op, sign) per op
    step = 0.09 * magnitude
    return [
        (ops[min(int(draws[2 * i] * len(ops)), len(ops) - 1)], 1.0 + (step if draws[2 * i + 1] < 0.5 else -step))
        for i in range(num_ops)
    ]


def apply_ops(x: Tensor, plans: list[OpPlan], counts: list[int]) -> Tensor:
    """Apply each clip's op plan to its frames; x: float [sum(counts), 3, H, W] in [0, 1].

    Clip i owns ``counts[i]`` consecutive frames and gets ``plans[i]`` (plans of equal length).
    In each round, the frames of every clip that drew the same op go through one call with
    per-frame factors, so a batch of small clips costs a few large torch calls instead of many
    small ones. The result equals applying each plan to each clip on its own.
    """
    if not plans or not plans[0]:
        return x
    offsets = np.cumsum([0, *counts])
    for r in range(len(plans[0])):
        names = [plan[r][0] for plan in plans]
        for name in dict.fromkeys(names):
            if name == "identity":
                continue
            members = [i for i, n in enumerate(names) if n == name]
            factors = [plans[i][r][1] for i in members]
            if len(members) == len(plans) and len(set(factors)) == 1:  # every clip, one factor
                x = PHOTOMETRIC_OPS[name](x, factors[0])
                continue
            index = torch.from_numpy(np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in members]))
            per_frame = torch.tensor([f for i, f in zip(members, factors) for _ in range(counts[i])], dtype=x.dtype)
            x[index] = PHOTOMETRIC_OPS[name](x[index], per_frame.view(-1, 1, 1, 1))
    return x
