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
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1)), h, w
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
    quantises to 8 bits like PIL, which the original CoVR / BLIP pipelines resize with.
    """
    h, w = frames.shape[-2:]
    if (h, w) == (size, size):
        return frames
    shrink = h > size or w > size
    return F.interpolate(frames.contiguous(), size=(size, size), mode="bicubic", align_corners=False, antialias=shrink)


def resized_crop(frames: Tensor, box: tuple[int, int, int, int], size: int) -> Tensor:
    """Crop uint8/float frames [F, 3, H, W] to box and resize (bicubic) -> float [F, 3, size, size] in [0, 1]."""
    top, left, h, w = box
    x = frames[..., top : top + h, left : left + w]
    if frames.dtype == torch.uint8:
        return resize_uint8(x, size).float().div_(255.0)
    if (h, w) != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=h > size or w > size)
    return x.float().clamp_(0.0, 1.0)


_GRAY_KERNEL = torch.tensor(_GRAY).view(1, 3, 1, 1)


def _gray(x: Tensor) -> Tensor:
    """[F, 3, H, W] -> [F, 1, H, W] luma."""
    return (x * _GRAY_KERNEL.to(x.dtype)).sum(dim=-3, keepdim=True)


def _blend(x: Tensor, other: Tensor, factor: float) -> Tensor:
    """PIL ImageEnhance rule: factor 0 gives ``other``, 1 gives ``x``, >1 extrapolates."""
    return torch.lerp(other, x, factor).clamp_(0.0, 1.0)


def brightness(x: Tensor, factor: float) -> Tensor:
    return (x * factor).clamp_(0.0, 1.0)


def contrast(x: Tensor, factor: float) -> Tensor:
    mean = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)  # per frame
    return _blend(x, mean.expand_as(x), factor)


def saturation(x: Tensor, factor: float) -> Tensor:
    return _blend(x, _gray(x).expand_as(x), factor)


def sharpness(x: Tensor, factor: float) -> Tensor:
    """Blend with PIL's SMOOTH-kernel blur [[1,1,1],[1,5,1],[1,1,1]]/13; border pixels stay unblurred, as in PIL."""
    if x.shape[-1] < 3 or x.shape[-2] < 3:
        return x
    rows = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]  # horizontal 3-sums [.., H, W-2]
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]  # 3x3 sums [.., H-2, W-2]
    blurred = x.clone()
    blurred[..., 1:-1, 1:-1] = box.add_(x[..., 1:-1, 1:-1], alpha=4.0).div_(13.0)  # (box + 4 centre) / 13
    return _blend(x, blurred, factor)


def autocontrast(x: Tensor, factor: float = 1.0) -> Tensor:
    """Stretch each frame's channels to [0, 1] (factor unused: the op has no magnitude)."""
    low = x.amin(dim=(-2, -1), keepdim=True)
    high = x.amax(dim=(-2, -1), keepdim=True)
    scale = torch.where(high > low, 1.0 / (high - low).clamp_min(1e-6), torch.ones_like(high))
    return ((x - low) * scale).clamp_(0.0, 1.0)


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


def rand_augment(
    x: Tensor,
    num_ops: int = 2,
    magnitude: float = 5.0,
    ops: tuple[str, ...] = tuple(PHOTOMETRIC_OPS),
    generator: Generator | None = None,
) -> Tensor:
    """Apply ``num_ops`` ops drawn with replacement, each with factor 1 +- 0.09 * magnitude (BLIP's 0-10 scale).

    x: float [F, 3, H, W] in [0, 1]; every frame gets the same ops and factors.
    """
    rng = _rng(generator)
    for _ in range(num_ops):
        name = ops[int(rng.integers(len(ops)))]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        x = PHOTOMETRIC_OPS[name](x, 1.0 + sign * 0.09 * magnitude)
    return x
