"""Types and allowed values of the config values a run reads, as dataclass schemas (OmegaConf
structured configs).

A value of the wrong type (`data.batch_size=abc`) or outside its allowed set
(`model.query_head=xaligner2`) fails in one line naming the key and what it accepts, before
anything is built: OmegaConf converts each configured value into the typed field (an Enum field
takes one of its member names, an int-valued one its values) and rejects what it cannot convert.
Fields marked POSITIVE must be > 0. Keys not listed here are not checked (Hydra's struct mode
already rejects unknown keys).

The schemas are applied after Hydra composes the config (covr.training.validate), not registered
in Hydra's ConfigStore as the groups' base configs: a compose-time schema would make Hydra print
its own multi-line error before covr can turn it into one line, and would have to list every key
of every config group.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# Optional[...] rather than "X | None": OmegaConf reads the annotations at runtime
POSITIVE = {"positive": True}  # field metadata: the value must be > 0


def _choices(name: str, *values: str) -> type[enum.Enum]:
    """A string Enum whose member names are its values (OmegaConf matches strings to member names)."""
    return enum.Enum(name, {value: value for value in values})


Family = _choices("Family", "blip2", "blip")
QueryHead = _choices("QueryHead", "xaligner", "joint")
ReferenceFrames = _choices("ReferenceFrames", "middle", "all")
Stage = enum.IntEnum("Stage", {"pretrain": 0, "aligner": 1, "text_encoder": 2})
VisualMemory = _choices("VisualMemory", "queries", "patches")
AlignerInit = _choices("AlignerInit", "joint", "learned")
Residual = _choices("Residual", "gate", "output")
TargetSource = _choices("TargetSource", "store", "frames")
ReferenceSampling = _choices("ReferenceSampling", "middle", "uniform", "random")
EpochMode = _choices("EpochMode", "unique_targets", "all_triplets")
FrameDtype = _choices("FrameDtype", "float32", "float16", "uint8")
Similarity = _choices("Similarity", "mean", "max_target_token", "max_token_pair", "uncertainty")
Rerank = _choices("Rerank", "soft")
CaptionFeatures = _choices("CaptionFeatures", "store", "online")
LossKind = _choices("LossKind", "hn_nce", "hug")
Sampler = _choices("Sampler", "random", "grouped_by_reference")


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
    similarity: Optional[Similarity] = None
    progress_every_s: Optional[float] = None
    rerank: Optional[Rerank] = None
    soft_lambda: Optional[float] = None
    report: bool = False
    report_queries: int = dataclasses.field(default=24, metadata=POSITIVE)
    report_top_k: int = dataclasses.field(default=5, metadata=POSITIVE)


@dataclasses.dataclass
class DataSchema:
    batch_size: int = dataclasses.field(default=1, metadata=POSITIVE)
    val_batch_size: Optional[int] = None
    num_workers: int = 0
    prefetch_factor: int = 2
    shared_slots: Optional[int] = None
    pin_memory: bool = False
    persistent_workers: bool = True
    num_reference_frames: int = dataclasses.field(default=1, metadata=POSITIVE)
    num_target_frames: int = dataclasses.field(default=15, metadata=POSITIVE)
    max_words: int = 30
    extract_store: bool = False
    store_mean_tokens: bool = True
    extract_batch_size: int = 16
    allow_missing: bool = False
    target_source: TargetSource = TargetSource.store
    reference_sampling: ReferenceSampling = ReferenceSampling.middle
    epoch_mode: EpochMode = EpochMode.unique_targets
    frame_dtype: FrameDtype = FrameDtype.uint8
    caption_features: CaptionFeatures = CaptionFeatures.store
    sampler: Sampler = Sampler.random
    group_size: int = dataclasses.field(default=4, metadata=POSITIVE)


@dataclasses.dataclass
class OptimSchema:
    lr: float = dataclasses.field(default=1e-5, metadata=POSITIVE)
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
    tau: float = dataclasses.field(default=0.07, metadata=POSITIVE)
    video_weight: float = 1.0
    caption_weight: float = 0.0
    kind: LossKind = LossKind.hn_nce
    triplet_weight: float = 0.0
    triplet_margin: float = 0.2


@dataclasses.dataclass
class MemoryBankSchema:
    size: int = 0
    entropy_weighting: bool = True
    weight: float = 1.0


@dataclasses.dataclass
class HUGSchema:
    holistic_weight: float = 1.0
    fine_grained_weight: float = 0.5
    coordination_weight: float = 0.1
    fine_grained_tau: float = dataclasses.field(default=0.07, metadata=POSITIVE)
    margin: float = 0.2


@dataclasses.dataclass
class UncertaintySchema:
    num_heads: int = dataclasses.field(default=4, metadata=POSITIVE)
    ffn_ratio: float = dataclasses.field(default=2.0, metadata=POSITIVE)
    hidden_ratio: float = dataclasses.field(default=1.0, metadata=POSITIVE)
    dropout: float = 0.0


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
    enable_progress_bar: Optional[bool] = None
    enable_model_summary: bool = False


@dataclasses.dataclass
class ModelSchema:
    stage: Stage = Stage.aligner
    query_head: QueryHead = QueryHead.xaligner
    reference_frames: ReferenceFrames = ReferenceFrames.middle
    max_text_length: int = 32
    gradient_checkpointing: bool = False


@dataclasses.dataclass
class BackboneSchema:
    family: Family = Family.blip2


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
    visual_memory: VisualMemory = VisualMemory.queries
    init: AlignerInit = AlignerInit.joint
    residual: Residual = Residual.gate


@dataclasses.dataclass
class CheckpointSchema:
    every_n_train_steps: Optional[int] = None


SCHEMAS: dict[str, type] = {
    "": RunSchema,
    "data": DataSchema,
    "optim": OptimSchema,
    "loss": LossSchema,
    "loss.memory_bank": MemoryBankSchema,
    "loss.hug": HUGSchema,
    "model.uncertainty": UncertaintySchema,
    "trainer": TrainerSchema,
    "model": ModelSchema,
    "model.backbone": BackboneSchema,
    "model.xaligner": XAlignerSchema,
    "checkpoint": CheckpointSchema,
}


def config_problem(cfg: DictConfig) -> str | None:
    """The first configured value of the wrong type, outside its allowed set or not > 0 where it
    must be, as one line ("data.batch_size='abc' is not an integer", "model.query_head='x' is not
    allowed; choose one of xaligner, joint"), or None when every listed value is fine."""
    for section, schema in SCHEMAS.items():
        node = cfg if not section else OmegaConf.select(cfg, section, default=None)
        if not isinstance(node, DictConfig):
            continue
        typed = OmegaConf.structured(schema)
        hints = typing.get_type_hints(schema)
        for field in dataclasses.fields(schema):
            if field.name not in node or OmegaConf.is_missing(node, field.name):
                continue
            key, value = f"{section}.{field.name}" if section else field.name, node[field.name]
            try:
                typed[field.name] = value
            except OmegaConfBaseException:
                choices = _enum_of(hints[field.name])
                if choices is not None:
                    return f"{key}={value!r} is not allowed; choose one of {', '.join(str(m.value) for m in choices)}"
                return f"{key}={value!r} is not {_describe(hints[field.name])}"
            if field.metadata.get("positive") and value is not None and not value > 0:
                return f"{key}={value!r} must be > 0"
    return None


def _enum_of(annotation: Any) -> type[enum.Enum] | None:
    """The Enum of an `E` or `Optional[E]` annotation, else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


def _describe(annotation: Any) -> str:
    """'an integer', 'a number or null', 'a list of integers', ... from a field's annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = typing.get_origin(annotation) is typing.Union and type(None) in typing.get_args(annotation)
    inner = args[0] if optional else annotation
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             list[int]: "a list of integers", list[float]: "a list of numbers"}  # fmt: skip
    return names.get(inner, str(inner)) + (" or null" if optional else "")
