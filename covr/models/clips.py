"""Reference and target clips as the retriever takes them: frames [B, F, 3, H, W] with a frame mask."""

from __future__ import annotations

import torch
from torch import Tensor


def as_clip(frames: Tensor, frame_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Accept [B,3,H,W] (one frame) or [B,F,3,H,W]; return frames [B,F,3,H,W] and mask [B,F] bool."""
    if frames.dim() == 4:
        frames = frames.unsqueeze(1)
    if frames.dim() != 5:
        raise ValueError(f"expected frames [B, F, 3, H, W] or [B, 3, H, W], got shape {tuple(frames.shape)}")
    if frame_mask is None:
        frame_mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
    frame_mask = frame_mask.bool()
    if (frame_mask.sum(1) == 0).any():
        raise ValueError("every sample needs at least one real frame (a frame_mask row is all False)")
    return frames, frame_mask


def middle_frame(frame_mask: Tensor) -> Tensor:
    """Index of each sample's middle real frame, n // 2 of its n frames (CoVR's middle frame). [B]"""
    return frame_mask.sum(dim=1) // 2
