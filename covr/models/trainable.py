"""Which parameters train: name patterns, frozen modules kept in eval mode, a summary table, and
activation checkpointing of transformers models."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from functools import partial

from torch import nn
from torch.utils.checkpoint import checkpoint


def set_trainable(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """requires_grad = True exactly for parameters whose name matches one of the glob `patterns`
    (e.g. "xaligner.*", "backbone.qformer.*"). A pattern that matches nothing is an error, so a
    typo cannot silently freeze what should train. Returns the trainable names."""
    patterns = list(patterns)
    hits = {p: 0 for p in patterns}
    trainable = []
    for name, param in model.named_parameters():
        matched = [p for p in patterns if fnmatchcase(name, p)]
        for p in matched:
            hits[p] += 1
        param.requires_grad_(bool(matched))
        if matched:
            trainable.append(name)
    unmatched = [p for p, n in hits.items() if n == 0]
    if unmatched:
        raise ValueError(f"trainable pattern(s) {unmatched} match no parameter of the model")
    return trainable


def keep_frozen_in_eval(model: nn.Module) -> None:
    """Put every submodule whose parameters are all frozen into eval mode (no dropout, fixed norms)."""
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def trainable_summary(model: nn.Module, depth: int = 2) -> list[tuple[str, int, int]]:
    """(module name, trainable count, total count) per module up to `depth` levels below the root,
    expanding only modules that are partly trainable or that hold submodules worth naming."""
    rows = []

    def visit(module: nn.Module, prefix: str, level: int) -> None:
        direct = [(n, p) for n, p in module.named_parameters(recurse=False)]
        for n, p in direct:
            rows.append((prefix + n, p.numel() if p.requires_grad else 0, p.numel()))
        for name, child in module.named_children():
            full = prefix + name
            params = list(child.parameters())
            if not params:
                continue
            if level < depth and list(child.named_children()):
                visit(child, full + ".", level + 1)
            else:
                rows.append((full, sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)))

    visit(model, "", 1)
    return rows


def format_trainable_summary(rows: list[tuple[str, int, int]]) -> str:
    """A fixed-width table of `trainable_summary` rows with a total line."""
    width = max([len(r[0]) for r in rows] + [6])
    lines = [f"{'module':<{width}}  {'trainable':>12}  {'total':>12}"]
    lines += [f"{name:<{width}}  {t:>12,}  {n:>12,}" for name, t, n in rows]
    lines.append(f"{'total':<{width}}  {sum(r[1] for r in rows):>12,}  {sum(r[2] for r in rows):>12,}")
    return "\n".join(lines)


def set_transformers_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Layer checkpointing of a transformers model (non-reentrant, RNG state preserved).

    Calls what `activation_checkpointing_enable` calls in the end: it also serves models whose class
    does not declare `supports_gradient_checkpointing` although their layers support it (BLIP's text
    encoder), and skips the public method's input-embedding hooks, which non-reentrant checkpointing
    does not need."""
    model._set_gradient_checkpointing(enable=enabled, gradient_checkpointing_func=partial(checkpoint, use_reentrant=False))
