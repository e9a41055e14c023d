"""The narrow interface every vision-language backbone (BLIP-2, BLIP) offers the retriever, and what
the families share: tokenising, the frozen target path, export to transformers, building from a
state dict, and resizing the vision position grid on load.

A backbone owns its encoders and tokenizer; the retriever, X-Aligner, training module and
evaluators only call the methods below and never reach inside. A family (covr/models/blip2/,
covr/models/blip/) describes itself to the generic loaders with one `Family` record.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

from covr.models.checkpoint_io import CheckpointError, initialise_left_out, load_state, skip_weight_init

log = logging.getLogger(__name__)

POSITION_KEY = "vision_model.embeddings.position_embedding"  # [1, 1 + g*g, Dv] in both families


def architecture_fields(config, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A transformers sub-config as a plain dict without the generic PretrainedConfig fields
    (versions, labels, output flags) nor `drop`: what a backbone `spec` stores to rebuild it."""
    generic = set(PretrainedConfig().to_dict()) | set(drop)
    return {k: v for k, v in config.to_dict().items() if k not in generic}


@dataclass
class TextTokens:
    """Tokenised text: input_ids [B, L] (long), attention_mask [B, L] (1 = real token)."""

    input_ids: Tensor
    attention_mask: Tensor


class Backbone(nn.Module):
    """Base class: the methods the retriever uses.

    vision_tokens(pixels [N,3,H,W]) -> [N,S,Dv]        frozen vision encoder output
    image_embeddings(vision_tokens) -> [N,Q,E]          target features, per-token L2-normalised
    visual_summary(vision_tokens) -> [N,Qs,summary_width] compact per-frame tokens (X-Aligner memory)
    tokenize(texts, max_length) -> TextTokens
    text_hidden(tokens) -> [B,L,H]                      text-only encoder states (X-Aligner memory)
    text_embedding(tokens) -> [B,E]                     normalised caption feature
    joint_hidden(vision_tokens, tokens, vision_mask) -> [B,Q,H]  composed-query hidden states
    project_query(hidden [B,Q,H]) -> [B,Q,E]           normalised query head (text projection)
    text_projection: nn.Linear                          copied into X-Aligner's own output head

    A subclass names its transformers model class and the parts of it that it holds (under the
    same names, so transformers state dicts load unchanged), the parts its target (gallery) path
    computes with, which of those `freeze_target_path` copies (the ones a stage may train), and the
    parameter-name globs each training stage trains.
    """

    family: str = "base"
    transformers_class: type[PreTrainedModel]  # the transformers retrieval model whose parts it holds
    parts: tuple[str, ...] = ()
    target_parts: tuple[str, ...] = ()
    copied_target_parts: tuple[str, ...] = ()
    text_encoder_patterns: tuple[str, ...] = ()  # stage 2's default: the textual query encoder
    pretrain_patterns: tuple[str, ...] = ()  # stage 0: contrastive video-caption adaptation
    config = None  # the transformers config of the wrapped model (vision_config, image_text_hidden_size)
    vision_model: nn.Module  # every family's ViT, under transformers' name
    text_projection: nn.Linear

    def __init__(self, model: PreTrainedModel, tokenizer) -> None:
        super().__init__()
        self.config = model.config
        for name in self.parts:
            setattr(self, name, getattr(model, name))
        self.tokenizer = tokenizer
        self.target_path: nn.ModuleDict | None = None  # frozen copy of target-path parts, once made

    @property
    def image_size(self) -> int:
        return int(self.config.vision_config.image_size)

    @property
    def vision_width(self) -> int:
        return int(self.config.vision_config.hidden_size)

    @property
    def embed_dim(self) -> int:
        return int(self.config.image_text_hidden_size)

    def check_frame_size(self, pixels: Tensor) -> None:
        """Reject frames whose size does not match the vision position embeddings."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected frames [N, 3, H, W], got shape {tuple(pixels.shape)}")
        h, w = pixels.shape[-2:]
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(
                f"frames are {h}x{w} but this {self.family} model expects {self.image_size}x{self.image_size} "
                f"(its position embeddings cover that grid); resize the frames, or build the model with "
                f"image_size={h} so the checkpoint's position embeddings are interpolated at load"
            )

    # ---- shared implementations ----------------------------------------------------------------
    def vision_tokens(self, pixels: Tensor) -> Tensor:
        """[N, 3, H, W] normalised frames -> [N, S, Dv]: the ViT and its final LayerNorm (BLIP-2:
        LAVIS's ln_vision)."""
        self.check_frame_size(pixels)
        return self.vision_model(pixel_values=pixels).last_hidden_state

    def text_embedding(self, tokens: TextTokens) -> Tensor:
        """Caption feature: normalize(text_proj(CLS of `text_hidden`)) [B, E] (the ITC text feature)."""
        return F.normalize(self.text_projection(self.text_hidden(tokens)[:, 0]), dim=-1)

    def project_query(self, hidden: Tensor) -> Tensor:
        """The query head of CoVR (BLIP) and CoVR-2 (BLIP-2): normalize(text_proj(hidden)) per token,
        [B, Q, H] -> [B, Q, E]."""
        return F.normalize(self.text_projection(hidden), dim=-1)

    def default_text_encoder(self) -> list[str]:
        """Parameter-name patterns of the textual query encoder (trained in stage 2)."""
        return list(self.text_encoder_patterns)

    def pretrain_parameters(self) -> list[str]:
        """Parameter-name patterns trained by stage 0 (contrastive video-caption adaptation)."""
        return list(self.pretrain_patterns)

    def tokenize(self, texts: list[str], max_length: int, padding: str = "longest") -> TextTokens:
        enc = self.tokenizer(list(texts), padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
        device = self.text_projection.weight.device
        return TextTokens(enc["input_ids"].to(device), enc["attention_mask"].to(device))

    def target_parameter_names(self) -> list[str]:
        """Names of the parameters the target (gallery) path uses."""
        return [n for n, _ in self.named_parameters() if n.split(".")[0] in self.target_parts]

    def target_state(self) -> dict[str, Tensor]:
        """The tensors the target path computes with, under their live names (identical whether or
        not it was copied: the copy's names replace the originals)."""
        state = {k: v for k, v in self.state_dict().items() if k.split(".")[0] in self.target_parts}
        if self.target_path is not None:
            state.update(self.target_path.state_dict())
        return state

    def freeze_target_path(self) -> None:
        """Keep a frozen copy of `copied_target_parts`, so that targets stay in the space of
        precomputed embedding stores while a stage trains those parts (the vision encoder is frozen
        outside stage 0, so it is never copied)."""
        parts = nn.ModuleDict()
        for name in self.copied_target_parts:
            part = getattr(self, name)
            if isinstance(part, nn.Parameter):
                parts.register_parameter(name, nn.Parameter(part.detach().clone()))
            else:
                parts[name] = copy.deepcopy(part)
        for p in parts.parameters():
            p.requires_grad_(False)
        self.target_path = parts.eval()

    def export_config(self) -> PretrainedConfig:
        """The transformers config `to_transformers` writes (a copy of the wrapped model's)."""
        return copy.deepcopy(self.config)

    def to_transformers(self) -> PreTrainedModel:
        """The transformers retrieval model with these weights (for `save_pretrained`)."""
        model = self.transformers_class(self.export_config())
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("target_path.")}
        model.load_state_dict(state, strict=True)
        model.vision_model.post_layernorm.eps = self.vision_model.post_layernorm.eps  # BLIP-2: LAVIS's ln_vision eps
        return model

    @classmethod
    def from_converted_state(cls, state: Mapping[str, Tensor], config: PretrainedConfig, tokenizer, source: str, strict: bool = True, **kwargs: Any) -> Backbone:
        """A backbone from a state dict under transformers names. Modules are built without their
        random init (every weight is loaded next); the ITM head, which CoVR files leave out and
        retrieval never uses, may be missing and is then initialised. kwargs go to the constructor."""
        with skip_weight_init():
            model = cls.transformers_class(config)
        backbone = cls(model, tokenizer, **kwargs)
        initialise_left_out(model, load_state(backbone, state, source, strict=strict, optional=("itm_head.",)))
        return backbone

    @classmethod
    def pretrained_model(cls, name_or_path: str, config: PretrainedConfig, image_size: int | None = None, **kwargs: Any) -> PreTrainedModel:
        """transformers' `from_pretrained` (hub id or save_pretrained folder), run at `image_size`:
        the position embeddings are interpolated when it differs from the stored grid."""
        model = cls.transformers_class.from_pretrained(name_or_path, config=config, **kwargs)
        if image_size is not None and image_size != config.vision_config.image_size:
            state = model.state_dict()
            state[POSITION_KEY] = resize_position_embedding(state[POSITION_KEY], image_size // config.vision_config.patch_size, name_or_path)
            config.vision_config.image_size = image_size
            if kwargs.get("attn_implementation"):
                config._attn_implementation = kwargs["attn_implementation"]
            model = cls.transformers_class(config)
            load_state(model, state, name_or_path)
        return model.float()


@dataclass
class WeightsOptions:
    """What a backbone config adds to a weights file (conf/model/backbone/*.yaml)."""

    spec: dict[str, Any] = field(default_factory=dict)  # what shapes cannot tell: heads, eps, activation
    image_size: int | None = None  # run size; position embeddings are interpolated to it
    attn_implementation: str = "sdpa"  # BLIP-2 (transformers' BLIP has one attention path)
    strict: bool = True  # False: load what fits, log the rest
    source: str = "state dict"  # where the weights came from, for messages
    vision_state: Mapping[str, Tensor] | None = None  # BLIP-2: the ViT from a second file (LAVIS stage 1)


@dataclass(frozen=True)
class Family:
    """What the generic loaders (covr.models.build) know of a backbone family.

    random(spec, tokenizer, seed, attn_implementation) -> Backbone    random init (tests, toy runs)
    from_pretrained(name_or_path, tokenizer | None, WeightsOptions) -> Backbone   transformers folder / hub id
    from_state(state, layout, tokenizer, WeightsOptions) -> Backbone  a state dict in a layout it recognised
    key_layout(keys) -> layout name | None                            "LAVIS BLIP-2", "transformers BLIP", ...
    """

    name: str  # "blip2": config value, checkpoint field
    display_name: str  # "BLIP-2": for messages
    model_type: str  # transformers config.json model_type
    max_text_length: int  # the published recipe's text length, for backbone-only sources
    backbone: type[Backbone]
    random: Callable[..., Backbone]
    from_pretrained: Callable[..., Backbone]
    from_state: Callable[..., Backbone]
    key_layout: Callable[[Collection[str]], str | None]


def report_unknown_keys(unknown: list[str], family: str, source: str, strict: bool) -> None:
    """Keys a conversion has no name for: an error when `strict`, else a logged warning."""
    if not unknown:
        return
    msg = f"{source}: {len(unknown)} keys have no {family} counterpart: {', '.join(sorted(unknown)[:25])}"
    if strict:
        raise CheckpointError(msg + " (strict=False ignores them)")
    log.warning(msg)


def resize_position_embedding(pos: Tensor, grid: int, source: str) -> Tensor:
    """Bicubic interpolation of [1, 1 + g*g, D] position embeddings to [1, 1 + grid*grid, D] (CLS kept)."""
    n = pos.shape[1] - 1
    old = int(math.isqrt(n))
    if old * old != n:
        raise ValueError(f"{source}: position embedding with {n} patch positions is not a square grid")
    if old == grid:
        return pos
    log.info("%s: interpolating vision position embeddings from %dx%d to %dx%d patches (bicubic)", source, old, old, grid, grid)
    cls, patches = pos[:, :1], pos[:, 1:]
    dim = pos.shape[-1]
    patches = patches.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(pos.dtype)
    return torch.cat([cls, patches], dim=1)


def set_image_size(state: dict[str, Tensor], spec: dict[str, Any], image_size: int | None, source: str) -> None:
    """Run at `image_size` (default: the spec's): interpolate the position embeddings in `state` to
    its patch grid (logged) and record it in `spec["vision_config"]`."""
    vision = spec["vision_config"]
    if image_size is None:
        image_size = vision["image_size"]
    grid = image_size // vision["patch_size"]
    if grid * vision["patch_size"] != image_size:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {vision['patch_size']}")
    if POSITION_KEY in state:
        state[POSITION_KEY] = resize_position_embedding(state[POSITION_KEY], grid, source)
    vision["image_size"] = image_size
