"""Early checks of a composed config: a wrong value fails in one line before anything is built.

Hydra itself rejects unknown keys (the configs are in struct mode); this module rejects values
outside their allowed set, naming the key and the choices."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from covr.training.schema import type_problems

CHOICES: dict[str, tuple[Any, ...]] = {
    "model.backbone.family": ("blip2", "blip"),
    "model.query_head": ("xaligner", "covr2"),
    "model.reference_frames": ("middle", "all"),
    "model.stage": (0, 1, 2),
    "model.xaligner.visual_memory": ("queries", "patches"),
    "model.xaligner.init": ("joint", "learned"),
    "model.xaligner.residual": ("gate", "output"),
    "data.target_source": ("store", "frames"),
    "data.reference_sampling": ("middle", "uniform", "random"),
    "data.epoch_mode": ("unique_targets", "all_triplets"),
    "data.frame_dtype": ("float32", "float16", "uint8"),
    "similarity": ("mean", "max_target_token", "max_token_pair"),
    "data.caption_features": ("store", "online"),
}
POSITIVE = ("data.batch_size", "data.num_target_frames", "data.num_reference_frames", "optim.lr", "loss.tau")


class ConfigValueError(ValueError):
    """A config value outside its allowed range."""


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigValueError naming the first key whose value has the wrong type (covr.training.schema)
    or is not allowed."""
    problem = type_problems(cfg)
    if problem:
        raise ConfigValueError(problem)
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value not in allowed:
            raise ConfigValueError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")
    for key in POSITIVE:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not value > 0:
            raise ConfigValueError(f"{key}={value!r} must be > 0")
    for i, overrides in enumerate(cfg.get("stages") or []):
        validate_config(OmegaConf.merge(cfg, overrides, {"stages": None}))
