"""Early checks of a composed config: a wrong value fails in one line before anything is built.

Hydra itself rejects unknown keys (the configs are in struct mode); the types, allowed values and
bounds of the known ones are the dataclass schemas of covr.training.schema."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from covr.training.schema import config_problem


class ConfigValueError(ValueError):
    """A config value of the wrong type or outside its allowed range."""


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigValueError naming the first key whose value has the wrong type, is not allowed or
    is out of bounds, in the config itself and in each of its `stages`."""
    problem = config_problem(cfg)
    if problem:
        raise ConfigValueError(problem)
    for overrides in cfg.get("stages") or []:
        validate_config(OmegaConf.merge(cfg, overrides, {"stages": None}))
