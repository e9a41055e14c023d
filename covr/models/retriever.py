"""The composed retriever: one narrow interface over a backbone and a query head.

    encode_query(frames [B,F,3,H,W], edit_text, caption) -> [B, Q, E]   per-token L2-normalised
    encode_target(frames [B,F,3,H,W], frame_weights)      -> [B, Q, E]   frames pooled
    encode_target_frames(frames)                          -> [B, F, Q, E] per frame (embedding stores)
    encode_text(texts)                                    -> [B, E]      target-caption features
    encode_gaussian_query / target_variance               HUG's Gaussian query and target variances
    similarity(query, gallery, mode)                      -> [Bq, N]     covr.similarity.similarity

Query heads (covr/models/heads.py): "joint", the backbone's own composed query; "xaligner" on top of it.
The target (video) path is always frozen: targets live in the space of precomputed stores.
"""

from __future__ import annotations

import hashlib
import json
from fnmatch import fnmatch
from typing import Any

import torch
from torch import Tensor, nn

from covr.models.backbone import Backbone, TextTokens
from covr.models.checkpoint_io import CheckpointError
from covr.models.clips import as_clip, middle_frame
from covr.models.heads import canonical_query_head
from covr.models.trainable import keep_frozen_in_eval, set_trainable, set_transformers_checkpointing
from covr.models.uncertainty import GaussianQuery, UncertaintyConfig, UncertaintyHeads
from covr.models.xaligner import XAligner, XAlignerConfig
from covr.similarity import pool_frames, similarity

class ComposedRetriever(nn.Module):
    """Backbone + query head, with stage-aware trainable parameters."""

    def __init__(
        self,
        backbone: Backbone,
        query_head: str = "xaligner",
        xaligner: XAlignerConfig | None = None,
        reference_frames: str = "middle",
        max_text_length: int = 32,
        uncertainty: UncertaintyConfig | None = None,
    ):
        """uncertainty: HUG's uncertainty heads (covr.models.uncertainty), None = none."""
        super().__init__()
        query_head = canonical_query_head(query_head)
        if reference_frames not in ("middle", "all"):
            raise ValueError(f"reference_frames {reference_frames!r} is not 'middle' or 'all'")
        self.backbone = backbone
        self.query_head = query_head
        self.reference_frames = reference_frames
        self.max_text_length = max_text_length
        self.xaligner: XAligner | None = None
        if query_head == "xaligner":
            cfg = xaligner or XAlignerConfig()
            visual_dim = backbone.summary_width if cfg.visual_memory == "queries" else backbone.vision_width
            if cfg.visual_memory not in ("queries", "patches"):
                raise ValueError(f"visual_memory {cfg.visual_memory!r} is not 'queries' or 'patches'")
            self.xaligner = XAligner(cfg, backbone.hidden_size, visual_dim, backbone.embed_dim, backbone.num_query_tokens)
            self.xaligner.init_projection(backbone.text_projection)
        self.uncertainty = UncertaintyHeads(backbone.embed_dim, uncertainty) if uncertainty is not None else None
        self.stage = 0
        # reference frames the query side was trained on, {"num_frames", "strategy"} (None: CoVR's one
        # middle frame); evaluation and covr.load follow it. Set from a checkpoint's model config.
        self.query_frames: dict[str, Any] | None = None

    # ---- training control --------------------------------------------------------------------
    def configure_stage(self, stage: int, text_encoder: list[str] | None = None) -> list[str]:
        """Stage 0: contrastive video-caption adaptation of the backbone itself (BLIP-2-style ITC; the
        toy experiment's "pretraining" of a randomly initialised backbone). Stage 1: only X-Aligner
        (with its projection) trains. Stage 2: also the textual query encoder, given as backbone
        parameter-name globs (default: the backbone's own list). From stage 1 on, the target path is
        frozen: when a trained part is shared with it, it is first frozen as a copy."""
        if stage == 0:
            patterns = ["backbone." + p for p in self.backbone.pretrain_parameters()]
        else:
            patterns = ["xaligner.*"] if self.xaligner is not None else []
            patterns += ["uncertainty.*"] if self.uncertainty is not None else []
            if stage >= 2:
                patterns += ["backbone." + p for p in (text_encoder if text_encoder is not None else self.backbone.default_text_encoder())]
            elif stage != 1:
                raise ValueError(f"stage must be 0, 1 or 2, got {stage}")
            if not patterns:
                raise ValueError("the joint query head has no X-Aligner: stage 1 would train nothing; use stage 2")
        shared = set(self.backbone.target_parameter_names())
        names = set(set_trainable(self, patterns))
        if stage > 0 and self.backbone.target_path is None and any(n[len("backbone."):] in shared for n in names):
            self.backbone.freeze_target_path()
        self.stage = stage
        keep_frozen_in_eval(self)
        return sorted(names)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Activation checkpointing: every X-Aligner block and every layer of the backbone's transformers
        models (ViT, Q-Former) recomputes its activations in backward instead of keeping them.
        Non-reentrant torch.utils.checkpoint with the RNG state preserved: identical gradients, less
        memory, about one extra forward of the checkpointed parts. Only modules in train mode with
        autograd on are affected, so frozen parts (eval mode, no_grad) run as before."""
        found = False
        for module in self.backbone.modules():
            if hasattr(module, "_set_gradient_checkpointing") and any(hasattr(m, "gradient_checkpointing") for m in module.modules()):
                set_transformers_checkpointing(module, enabled)
                found = True
        if not found:
            raise ValueError(f"the {self.backbone.family} backbone holds no transformers model that supports gradient checkpointing")
        if self.xaligner is not None:
            self.xaligner.gradient_checkpointing = enabled

    def train(self, mode: bool = True) -> "ComposedRetriever":
        super().train(mode)
        if mode:
            keep_frozen_in_eval(self)
        return self

    def _grad(self, part: str):
        """Autograd only where something trains: `part` is "vision" (the vision encoder), "text" (the
        rest of the backbone) or "target" (whatever the target path computes with)."""
        vision_ids = {id(p) for p in self.backbone.vision_model.parameters()}
        if part == "vision":
            params = self.backbone.vision_model.parameters()
        elif part == "target":
            target = self.backbone.target_parameter_names()
            named = dict(self.backbone.named_parameters())
            params = (named[n] for n in target) if self.backbone.target_path is None else self.backbone.target_path.parameters()
        else:
            params = (p for p in self.backbone.parameters() if id(p) not in vision_ids)
        return torch.set_grad_enabled(torch.is_grad_enabled() and any(p.requires_grad for p in params))

    # ---- encoders ----------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.backbone.image_size

    def tokenize(self, texts: list[str]) -> TextTokens:
        return self.backbone.tokenize(texts, self.max_text_length)

    def _vision_tokens(self, frames: Tensor, frame_mask: Tensor) -> Tensor:
        """[B,F,3,H,W] -> [B,F,S,Dv]; padded frames are not encoded (zeros)."""
        with self._grad("vision"):
            tokens = self.backbone.vision_tokens(frames[frame_mask])
        out = tokens.new_zeros(*frame_mask.shape, *tokens.shape[1:])
        out[frame_mask] = tokens
        return out

    def _reference_vision(self, frames: Tensor, frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(vision tokens [B,F',S,Dv] of the frames the query reads, all or the middle one; the middle one's [B,S,Dv])."""
        uses_visual_memory = self.xaligner is not None and "visual" in self.xaligner.sources
        rows = torch.arange(frames.shape[0], device=frames.device)
        if uses_visual_memory or self.reference_frames == "all":
            vision = self._vision_tokens(frames, frame_mask)  # [B,F,S,Dv]
        else:  # only the middle frame is needed
            vision = self._vision_tokens(frames[rows, middle_frame(frame_mask)].unsqueeze(1), frame_mask[:, :1])
        return vision, vision[rows, middle_frame(frame_mask)] if vision.shape[1] > 1 else vision[:, 0]

    def _compose(self, vision: Tensor, middle: Tensor, frame_mask: Tensor, edit: TextTokens, caption: list[str] | None) -> Tensor:
        """The composed query [B, Q, E] from `_reference_vision`'s outputs and the tokenised edits."""
        with self._grad("text"):
            if self.reference_frames == "all":
                s = vision.shape[2]
                joint = self.backbone.joint_hidden(vision.flatten(1, 2), edit, frame_mask.repeat_interleave(s, dim=1))
            else:
                joint = self.backbone.joint_hidden(middle, edit)  # [B,Q,H]
            if self.xaligner is None:
                return self.backbone.project_query(joint)
            memories = self._memories(vision, frame_mask, edit, caption)
        return self.xaligner(joint, *memories)

    def encode_query(
        self, frames: Tensor, edit_text: list[str], caption: list[str] | None = None, frame_mask: Tensor | None = None
    ) -> Tensor:
        """Composed query [B, Q, E] from reference frames [B,F,3,H,W] (F >= 1, padded clips with
        `frame_mask` [B,F]), edit texts and optional reference captions ("" = no caption)."""
        frames, frame_mask = as_clip(frames, frame_mask)
        if len(edit_text) != frames.shape[0]:
            raise ValueError(f"{len(edit_text)} edit texts for {frames.shape[0]} reference clips")
        vision, middle = self._reference_vision(frames, frame_mask)
        return self._compose(vision, middle, frame_mask, self.tokenize(edit_text), caption)

    def encode_gaussian_query(self, frames: Tensor, edit_text: list[str], caption: list[str] | None = None,
                              frame_mask: Tensor | None = None, mismatched_edit: list[str] | None = None) -> GaussianQuery:  # fmt: skip
        """HUG's query (needs the uncertainty heads): `encode_query`'s tokens as the mean, the variance
        from the reference frame's image-only tokens, the edit's text tokens and the query itself;
        with `mismatched_edit`, also the multimodal sigma of the same references with those texts."""
        if self.uncertainty is None:
            raise ValueError("this model has no uncertainty heads (model.uncertainty; loss=hug adds them)")
        frames, frame_mask = as_clip(frames, frame_mask)
        vision, middle = self._reference_vision(frames, frame_mask)
        edit = self.tokenize(edit_text)
        mean = self._compose(vision, middle, frame_mask, edit, caption)
        with self._grad("target"):
            image = self.backbone.image_embeddings(middle)  # [B,Q,E]: the target path's tokens of the reference frame
        with self._grad("text"):
            text = self.backbone.project_query(self.backbone.text_hidden(edit))  # [B,L,E]
        variance, multimodal = self.uncertainty.query_variance(image, text, edit.attention_mask.bool(), mean)
        if mismatched_edit is None:
            return GaussianQuery(mean, variance, multimodal)
        mismatched = self.uncertainty.multimodal(self._compose(vision, middle, frame_mask, self.tokenize(mismatched_edit), caption))
        return GaussianQuery(mean, variance, multimodal, mismatched)

    def target_variance(self, tokens: Tensor) -> Tensor:
        """Variance [N, Q, E] of target tokens [N, Q, E] under the uncertainty heads (HUG)."""
        if self.uncertainty is None:
            raise CheckpointError("similarity 'uncertainty' needs a model trained with loss=hug: this one has no uncertainty heads (model.uncertainty)")
        return self.uncertainty.target_variance(tokens)

    def _memories(self, vision: Tensor, frame_mask: Tensor, edit: TextTokens, caption: list[str] | None) -> tuple:
        """X-Aligner inputs: (frame tokens, frame mask), (edit states, mask), (caption states, mask, present)."""
        sources = self.xaligner.sources
        visual = text = cap = None
        b, f = frame_mask.shape
        if "visual" in sources:
            if self.xaligner.cfg.visual_memory == "queries":
                summary = self.backbone.visual_summary(vision[frame_mask])  # [N_real, Q, H]
                per_frame = summary.new_zeros(b, f, *summary.shape[1:])
                per_frame[frame_mask] = summary
            else:
                per_frame = vision
            visual = (per_frame, frame_mask)
        if "text" in sources:
            text = (self.backbone.text_hidden(edit), edit.attention_mask.bool())
        if "caption" in sources:
            captions = [c if isinstance(c, str) else "" for c in (caption or [""] * b)]
            if len(captions) != b:
                raise ValueError(f"{len(captions)} captions for {b} reference clips")
            present = torch.tensor([bool(c.strip()) for c in captions], device=frame_mask.device)
            tokens = self.tokenize(captions)
            cap = (self.backbone.text_hidden(tokens), tokens.attention_mask.bool(), present)
        return visual, text, cap

    def encode_target_frames(self, frames: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """Per-frame target features [B, F, Q, E] (zeros at padded frames). Outside stage 0 the target
        path is frozen and runs without autograd."""
        frames, frame_mask = as_clip(frames, frame_mask)
        with self._grad("target"):
            feats = self.backbone.image_embeddings(self.backbone.vision_tokens(frames[frame_mask]))
        out = feats.new_zeros(*frame_mask.shape, *feats.shape[1:])
        out[frame_mask] = feats
        return out

    def encode_target(self, frames: Tensor, frame_weights: Tensor | None = None, frame_mask: Tensor | None = None) -> Tensor:
        """Target video [B, Q, E]: per-frame features pooled with `frame_weights` [B,F] (uniform if None)."""
        frames, frame_mask = as_clip(frames, frame_mask)
        return pool_frames(self.encode_target_frames(frames, frame_mask), frame_weights, frame_mask)

    @staticmethod
    def encode_target_embeddings(frame_embeddings: Tensor, frame_weights: Tensor | None = None, frame_mask: Tensor | None = None) -> Tensor:
        """Target from precomputed per-frame features [B,F,(Q,)E] -> [B,(Q,)E]."""
        return pool_frames(frame_embeddings, frame_weights, frame_mask)

    def encode_text(self, texts: list[str]) -> Tensor:
        """Normalised text features [B, E] (the CoVR-2 target-caption term)."""
        with self._grad("text"):
            return self.backbone.text_embedding(self.tokenize(texts))

    similarity = staticmethod(similarity)

    # ---- identity ----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Architecture facts that define the embedding spaces (for caches and model cards)."""
        return {
            "family": self.backbone.family,
            "spec": self.backbone.spec,
            "image_size": self.image_size,
            "query_head": self.query_head,
            "reference_frames": self.reference_frames,
            "max_text_length": self.max_text_length,
            "xaligner": None if self.xaligner is None else vars(self.xaligner.cfg),
        } | ({"uncertainty": vars(self.uncertainty.cfg)} if self.uncertainty is not None else {})  # absent key: identities of older models unchanged

    def describe_target(self) -> dict[str, Any]:
        """Tensor names and shapes are hashed with the weights, so sizes need not be repeated here."""
        return {"family": self.backbone.family, "image_size": self.image_size}

    @staticmethod
    def _hash(state: dict[str, Tensor], extra: dict[str, Any]) -> str:
        h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
        for name, tensor in sorted(state.items()):
            t = tensor.detach().double().flatten()
            h.update(f"{name}{tuple(tensor.shape)}".encode())
            h.update(torch.stack([t.sum(), t.abs().sum(), t[:: max(1, t.numel() // 64)].sum()]).numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def identity(self) -> str:
        """Fingerprint of the architecture and every weight (sums and a strided sample per tensor)."""
        return self._hash(self.state_dict(), self.describe())

    @property
    def target_identity(self) -> str:
        """Fingerprint of the target path only: gallery caches and embedding stores depend on nothing else."""
        return self._hash(self.backbone.target_state(), self.describe_target())

    @property
    def text_identity(self) -> str:
        """Fingerprint of what `encode_text` computes with (the textual encoder's weights, the text
        length): precomputed caption features (text stores) depend on nothing else."""
        patterns = self.backbone.default_text_encoder()
        state = {k: v for k, v in self.backbone.state_dict().items() if any(fnmatch(k, p) for p in patterns)}
        return self._hash(state, {"family": self.backbone.family, "max_text_length": self.max_text_length, "kind": "text"})
