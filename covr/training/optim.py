"""AdamW with stage-aware parameter groups and a per-step cosine schedule with optional warm-up."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def parameter_groups(model: nn.Module, lr: float, weight_decay: float, text_encoder_lr: float | None = None) -> list[dict[str, Any]]:
    """Trainable parameters split into (X-Aligner | backbone text encoder) x (decay | no decay).

    No weight decay on biases, norms, gates, embeddings and learned tokens (1-D tensors or names
    with 'embedding'/'tokens'), as usual for transformers. The backbone's text encoder (stage 2)
    may use its own learning rate."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "backbone" if name.startswith("backbone.") else "head"
        decay = p.ndim >= 2 and "embedding" not in name and "tokens" not in name
        groups.setdefault((part, decay), []).append(p)
    out = []
    for (part, decay), params in sorted(groups.items()):
        group_lr = text_encoder_lr if (part == "backbone" and text_encoder_lr is not None) else lr
        out.append({"params": params, "lr": group_lr, "weight_decay": weight_decay if decay else 0.0, "name": f"{part}/{'decay' if decay else 'no_decay'}"})
    if not out:
        raise ValueError("no trainable parameters: check the stage and text_encoder settings")
    return out


def make_optimizer(groups: list[dict[str, Any]], betas=(0.9, 0.999), eps: float = 1e-8, fused: bool | None = None) -> torch.optim.Optimizer:
    """AdamW; fused kernels when every parameter is on CUDA (or when asked)."""
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, betas=tuple(betas), eps=eps, fused=fused or None)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0):
    """LambdaLR: linear warm-up to each group's lr, then cosine decay to min_lr_ratio * lr."""
    total_steps = max(1, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
