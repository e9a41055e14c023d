"""Inputs a run needs, checked before anything is built: a missing file fails in seconds, in one
line naming the config key to set, not after minutes of model building (or hours of training, for
the test set evaluated at the end)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def missing_input(stages: list[DictConfig], cfg: DictConfig) -> str | None:
    """The first input of the run that does not exist, as "key: path does not exist", or None.

    Checked: each stage's train / val CSVs and video folders, backbone weights given as a file
    (hub ids are left to the loader), `model.init_from`, and the annotation files and video folders
    of the test benchmarks evaluated after training."""
    for stage in stages:
        for split in ("train", "val"):
            for key in ("csv", "video_root"):
                problem = _check(stage, f"data.{split}.{key}")
                if problem:
                    return problem
        for key in ("model.backbone.weights", "model.backbone.vision_weights"):
            value = OmegaConf.select(stage, key, default=None)
            if isinstance(value, str) and (value.endswith(WEIGHT_SUFFIXES) or _under(value, cfg, "weights_dir")):
                problem = _check(stage, key)
                if problem:
                    return problem
        problem = _check(stage, "model.init_from")
        if problem:
            return problem
    if cfg.get("test_after_training") and cfg.get("test"):
        for name in cfg.test:
            for key in ("annotation", "video_root"):
                problem = _check(cfg, f"test.{name}.{key}", " (evaluated after training; test_after_training=false skips it)")
                if problem:
                    return problem
    return None


LOGGER_PACKAGES = {  # logger class: (modules, any of which it needs; the covr extra that installs one)
    "TensorBoardLogger": (("tensorboard", "tensorboardX"), "tensorboard"),
    "WandbLogger": (("wandb",), "wandb"),
}


def missing_package(cfg: DictConfig) -> str | None:
    """A configured logger whose package is not installed, as one line naming the install command."""
    for name, logger in (cfg.get("logger") or {}).items():
        target = str((logger or {}).get("_target_", ""))
        modules, extra = LOGGER_PACKAGES.get(target.rsplit(".", 1)[-1], ((), ""))
        if modules and not any(importlib.util.find_spec(m) for m in modules):
            return f"logger {name} needs the {modules[0]} package, which is not installed: pip install -e '.[{extra}]' (or logger=csv)"
    return None


def _check(cfg: DictConfig, key: str, note: str = "") -> str | None:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None or Path(str(value)).expanduser().exists():
        return None
    return f"{key}: {value} does not exist{note}"


def _under(value: str, cfg: DictConfig, root_key: str) -> bool:
    root = OmegaConf.select(cfg, f"paths.{root_key}", default=None)
    return bool(root) and Path(value).expanduser().resolve().is_relative_to(Path(str(root)).expanduser().resolve())


def path_hints(message: str, cfg: DictConfig | None) -> list[str]:
    """One line per configured root (datasets, weights) that the message names a path under, saying
    where that root comes from and how to move it."""
    if cfg is None:
        return []
    roots = {
        "data_dir": ("COVR_DATA", "the folder that holds the datasets (WebVid-CoVR/, WebVid/, CIRR/, ...)"),
        "weights_dir": ("COVR_WEIGHTS", "the folder that holds the downloaded weights (blip2_finetune_coco.pth, ...)"),
    }
    hints = []
    for key, (variable, what) in roots.items():
        root = _select(cfg, f"paths.{key}")
        if root and str(root) in message:
            hints.append(f"paths.{key} is {root}: set {variable} to {what}, or pass the file's own key (README, \"Where things live\")")
    return hints


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=None)
    except Exception:  # an unresolvable interpolation: no hint rather than a second error
        return None
