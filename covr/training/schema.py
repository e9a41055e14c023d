"""Types of the config values a run reads, as dataclass schemas (OmegaConf structured configs).

A value of the wrong type (`data.batch_size=abc`) fails in one line naming the key and the type,
before anything is built: OmegaConf converts each configured value into the typed field, which
accepts what it can convert ("5" for an int) and rejects the rest. Keys not listed here are not
type-checked (Hydra's struct mode already rejects unknown keys); allowed *values* are checked in
covr.training.validate.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# Optional[...] rather than "X | None": OmegaConf reads the annotations at runtime


@dataclasses.dataclass
class RunSchema:
    seed: int = 0
    threads: Optional[int] = None
    trust_checkpoint: bool = False
    test_after_training: bool = True
    test_batch_size: int = 32
    num_workers: int = 4
    cache_galleries: bool = True
    recall_ks: Optional[list[int]] = None


@dataclasses.dataclass
class DataSchema:
    batch_size: int = 1
    val_batch_size: Optional[int] = None
    num_workers: int = 0
    prefetch_factor: int = 2
    shared_slots: Optional[int] = None
    pin_memory: bool = False
    persistent_workers: bool = True
    num_reference_frames: int = 1
    num_target_frames: int = 15
    max_words: int = 30
    extract_store: bool = False
    store_mean_tokens: bool = True
    extract_batch_size: int = 16
    allow_missing: bool = False


@dataclasses.dataclass
class OptimSchema:
    lr: float = 1e-5
    text_encoder_lr: Optional[float] = None
    gate_lr_scale: float = 1.0
    weight_decay: float = 0.0
    betas: Optional[list[float]] = None
    eps: float = 1e-8
    warmup_fraction: float = 0.0
    warmup_steps: Optional[int] = None
    min_lr_ratio: float = 0.0
    fused: Optional[bool] = None


@dataclasses.dataclass
class LossSchema:
    alpha: float = 1.0
    beta: float = 0.5
    tau: float = 0.07
    video_weight: float = 1.0
    caption_weight: float = 0.0


@dataclasses.dataclass
class TrainerSchema:
    num_nodes: int = 1
    max_epochs: Optional[int] = None
    max_steps: int = -1
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 50
    check_val_every_n_epoch: Optional[int] = 1
    num_sanity_val_steps: int = 0
    gradient_clip_val: Optional[float] = None
    limit_train_batches: Optional[float] = None
    limit_val_batches: Optional[float] = None
    val_check_interval: Optional[float] = None
    deterministic: Any = False
    benchmark: Optional[bool] = None
    enable_progress_bar: bool = True


@dataclasses.dataclass
class ModelSchema:
    stage: int = 1
    max_text_length: int = 32
    gradient_checkpointing: bool = False


@dataclasses.dataclass
class XAlignerSchema:
    num_blocks: int = 2
    width: Optional[int] = None
    num_heads: int = 12
    use_caption: bool = True
    self_attention: bool = True
    ffn_ratio: float = 4.0
    dropout: float = 0.0
    gate_init: float = 0.0
    max_frames: int = 32


@dataclasses.dataclass
class CheckpointSchema:
    every_n_train_steps: Optional[int] = None


SCHEMAS: dict[str, type] = {
    "": RunSchema,
    "data": DataSchema,
    "optim": OptimSchema,
    "loss": LossSchema,
    "trainer": TrainerSchema,
    "model": ModelSchema,
    "model.xaligner": XAlignerSchema,
    "checkpoint": CheckpointSchema,
}
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def type_problems(cfg: DictConfig) -> str | None:
    """The first configured value of the wrong type, as one line ('data.batch_size='abc' is not an
    integer'), or None when every listed key has a value of its type."""
    for section, schema in SCHEMAS.items():
        node = cfg if not section else OmegaConf.select(cfg, section, default=None)
        if not isinstance(node, DictConfig):
            continue
        typed = OmegaConf.structured(schema)
        for field in dataclasses.fields(schema):
            if field.name not in node or OmegaConf.is_missing(node, field.name):
                continue
            value = node[field.name]
            try:
                typed[field.name] = value
            except OmegaConfBaseException:
                key = f"{section}.{field.name}" if section else field.name
                return f"{key}={value!r} is not {_describe(field.type)}"
    return None


def _describe(annotation: Any) -> str:
    """'an integer', 'a number or null', 'a list of integers', ... from a field's annotation."""
    text = str(annotation)
    optional = text.startswith("Optional[")
    inner = text[len("Optional[") : -1] if optional else text
    names = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
             "list[int]": "a list of integers", "list[float]": "a list of numbers"}  # fmt: skip
    return names.get(inner, inner) + (" or null" if optional else "")
