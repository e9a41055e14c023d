"""LightningModule: one training step = composed queries vs targets under HN-NCE over the global batch;
validation = recall of val queries against the val targets."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from covr.data.transforms import to_model_input
from covr.losses import HUGLoss, build_objective
from covr.models import build_retriever, checkpoint_payload
from covr.similarity import pool_tokens, renormalised_mean
from covr.models.trainable import format_trainable_summary, trainable_summary
from covr.training.optim import cosine_with_warmup, describe_groups, make_optimizer, parameter_groups, plan_schedule, steps_per_run
from covr.training.recall import recall_against_gallery
from covr.training.validate import ConfigValueError

log = logging.getLogger(__name__)
DIAGNOSTICS = ("bank_used", "scale", "bias")  # logged figures of a loss that are not loss terms


class CoVRModule(pl.LightningModule):
    """Wraps a `ComposedRetriever` (`self.model`) with loss, optimisation and validation recall.

    Stages 1 and 2 train composed queries against target videos; stage 0 adapts the backbone
    with the same loss between target captions and target videos (validation: caption -> video).

    model_cfg: covr.models.build_retriever config; loss_cfg: a `loss` config (covr.losses.build_objective);
    optim_cfg: {lr, text_encoder_lr, gate_lr_scale, weight_decay, betas, eps, warmup_fraction, warmup_steps,
    min_lr_ratio, fused} (conf/optim/adamw.yaml);
    recall_ks: the K of validation R@K (the checkpoint monitor is val/R1)."""

    def __init__(self, model_cfg: dict[str, Any], loss_cfg: dict[str, Any], optim_cfg: dict[str, Any], recall_ks: tuple[int, ...] = (1, 5, 10, 50),
                 online_captions: bool = True):  # fmt: skip
        """online_captions: False when the caption term reads precomputed features (data.caption_features: store)."""
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = model_cfg
        self.model = build_retriever(model_cfg)
        try:  # a memory bank's buffers are saved with the module
            self.loss = build_objective(loss_cfg, self.model.stage, self.model.backbone.embed_dim)
        except ValueError as err:  # a loss option that does not fit the stage: one line, as config errors
            raise ConfigValueError(str(err)) from None
        if isinstance(self.loss, HUGLoss) and self.model.uncertainty is None:
            raise ConfigValueError("loss.kind=hug needs the model's uncertainty heads (model.uncertainty); select loss=hug, which sets both")
        self.optim_cfg = dict(optim_cfg)
        self.recall_ks = tuple(recall_ks)
        self._val_outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        if self.model.stage > 0 and self.model.xaligner is not None and not (online_captions and self.loss.caption_weight):
            self._freeze_unused_text_projection()
        log.info("trainable parameters (stage %d):\n%s", self.model.stage, format_trainable_summary(trainable_summary(self.model)))
        if self.model.xaligner is not None:  # branch update norms (and gates) of each step, logged in training_step
            self.model.xaligner.record_stats = True

    def _freeze_unused_text_projection(self) -> None:
        """With X-Aligner (its own output head) and no online caption encoding, nothing on the loss's
        path uses the backbone's text_projection: it stays frozen. A trainable parameter without a
        gradient would stop DDP ("parameters that were not used in producing loss")."""
        params = [p for p in self.model.backbone.text_projection.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        if params:
            log.info("backbone.text_projection stays frozen: the caption term reads stored features and X-Aligner has its own head")

    # ---- steps -------------------------------------------------------------------------------
    def _query(self, batch: dict[str, Any]) -> Tensor:
        frames = to_model_input(batch["reference_frames"])  # uint8 batches are normalised here, on the device
        return self.model.encode_query(frames, batch["edit"], batch.get("reference_caption"), batch.get("reference_frame_mask"))

    def _target(self, batch: dict[str, Any]) -> Tensor:
        mask = batch.get("target_frame_mask")
        if "target_embedding" in batch:  # precomputed store: [B, F, (Q,) E]
            return self.model.encode_target_embeddings(batch["target_embedding"].float(), batch.get("target_weights"), mask)
        return self.model.encode_target(to_model_input(batch["target_frames"]), batch.get("target_weights"), mask)

    def _caption(self, batch: dict[str, Any]) -> Tensor:
        """Target-caption features [B, E] for the caption term: precomputed and frozen from a text store
        (`data.caption_features: store`, CoVR-2's recipe), else encoded online by the model."""
        if "target_caption_embedding" in batch:
            return batch["target_caption_embedding"].float()
        return self.model.encode_text(batch["target_caption"])

    def _pair(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(query side, target side) of a batch: composed query vs target video; in stage 0 the
        target caption vs the target video (video-caption contrastive adaptation)."""
        if self.model.stage == 0:
            return self.model.encode_text(batch["target_caption"]), self._target(batch)
        return self._query(batch), self._target(batch)

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> Tensor | None:
        if batch is None:  # every sample of the batch failed to decode
            return None
        caption = self._caption(batch) if self.loss.caption_weight and self.model.stage > 0 else None
        if isinstance(self.loss, HUGLoss):
            losses = self._hug_losses(batch, caption)
        else:
            query, target = self._pair(batch)
            ids = {"reference_ids": batch.get("reference_id"), "target_ids": batch.get("target_id")} if self.loss.needs_ids else {}
            losses = self.loss(query, target, caption, **ids)
        b = len(batch["edit"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=b)
        for name, value in losses.items():  # terms as train/loss_<term>; figures (bank_used, scale, bias) as train/<name>
            if name != "loss":
                self.log(f"train/{'' if name in DIAGNOSTICS else 'loss_'}{name}", value, batch_size=b)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True, batch_size=b)
        for group in self.trainer.optimizers[0].param_groups:
            self.log(f"lr/{group.get('name', 'group')}", group["lr"], batch_size=b)
        if self.model.xaligner is not None and self.model.stage > 0:  # how far each branch moves the query
            for name, value in self.model.xaligner.stats.items():
                self.log(f"xaligner/{name}", value, batch_size=b)
        if batch.get("num_dropped"):
            self.log("train/dropped_samples", float(batch["num_dropped"]), reduce_fx="sum", batch_size=b)
        return losses["loss"]

    def _hug_losses(self, batch: dict[str, Any], caption: Tensor | None) -> dict[str, Tensor]:
        """HUG: Gaussian query (and, for the coordination term, the same references with the next row's
        edit: a fixed shift, no random draw) against Gaussian targets."""
        edits = list(batch["edit"])
        shifted = edits[1:] + edits[:1] if self.loss.coordination_weight else None  # also with one row: every rank runs the same collectives
        frames = to_model_input(batch["reference_frames"])
        query = self.model.encode_gaussian_query(frames, edits, batch.get("reference_caption"), batch.get("reference_frame_mask"), shifted)
        target = self._target(batch)
        heads = self.model.uncertainty
        return self.loss(query.mean, query.variance, target, self.model.target_variance(target), heads.scale, heads.bias,
                         query.multimodal_sigma, query.mismatched_sigma, caption)  # fmt: skip

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # ResumableDataLoader's position as saved by a checkpoint at the end of this batch
        # (checkpoint callbacks run before the module's own on_train_batch_end)
        loader = self.trainer.train_dataloader
        if hasattr(loader, "batches_done"):
            loader.batches_done = batch_idx + 1

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is None:
            return
        query, target = self._pair(batch)
        query, target = pool_tokens(query).float(), self._val_target(target).float()
        self._val_outputs.append((batch["index"].to(query.device, copy=True), query, target))  # a copy: batch tensors may view a recycled loader slot

    def _val_target(self, target: Tensor) -> Tensor:
        """Targets as the WebVid-CoVR test protocol (covr2) scores them: every token of the frame-pooled
        target re-normalised, then the token mean, so val R@1 predicts test R@1. A token-mean store
        ([F, E] per video) cannot be re-normalised per token: its mean is used, with a warning."""
        if target.dim() == 3:
            return renormalised_mean(target)
        if self.model.backbone.num_query_tokens == 1:  # BLIP: one token per frame, [B, E] is that token
            return renormalised_mean(target[:, None])
        if not getattr(self, "_warned_pooled_store", False):
            log.warning("validation targets come from a token-mean store: not re-normalised per token as the test protocol does")
            self._warned_pooled_store = True
        return target

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        index, query, target = (torch.cat(x) for x in zip(*self._val_outputs))
        self._val_outputs.clear()
        if self.trainer.world_size > 1:  # equal-size chunks are not guaranteed: pad, gather, trim
            index, query, target = _gather_rows(self, index, query, target)
        keep = _first_occurrences(index)  # a distributed sampler pads with repeated rows
        index, query, target = index[keep], query[keep], target[keep]
        annotations = self.trainer.datamodule.val_dataset.annotations
        rows = index.tolist()
        # stage 0 retrieves target videos from their captions: no reference video to mask
        references = [annotations.reference_id(r) if self.model.stage > 0 else "" for r in rows]
        metrics = recall_against_gallery(query, target, references, [annotations.target_id(r) for r in rows], self.recall_ks)
        for name, value in metrics.items():
            self.log(f"val/{name}", value, prog_bar=name in ("R1", "R5"), sync_dist=False, rank_zero_only=False)

    # ---- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.optim_cfg
        groups = parameter_groups(self.model, cfg["lr"], cfg.get("weight_decay", 0.05), cfg.get("text_encoder_lr"), float(cfg.get("gate_lr_scale", 1.0)))
        optimizer = make_optimizer(groups, cfg.get("betas", (0.9, 0.999)), cfg.get("eps", 1e-8), cfg.get("fused"))
        total, context = self._total_steps()
        schedule = plan_schedule(cfg, total, context)  # a warm-up over half of the run fails here, in one line
        log.info("schedule: %s (%s); parameter groups:\n%s", schedule.describe(), context, "\n".join(describe_groups(groups)))
        scheduler = cosine_with_warmup(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _total_steps(self) -> tuple[int, str]:
        """Optimiser steps of the whole fit, for the schedule, and how they were counted. Computed from
        the datamodule instead of `trainer.estimated_stepping_batches`, which would build the train
        loader before a resumed run restores its position (and so start the epoch from its first batch)."""
        trainer = self.trainer
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "train_batches_per_epoch"):
            return int(trainer.estimated_stepping_batches), "Lightning's estimate"
        batches = datamodule.train_batches_per_epoch(trainer.world_size)
        total = steps_per_run(batches, trainer.max_epochs, trainer.max_steps, trainer.limit_train_batches, trainer.accumulate_grad_batches)
        context = f"{trainer.max_epochs} epochs x {batches} batches per process, {trainer.world_size} process{'es' * (trainer.world_size != 1)}"
        return total, context + (f", max_steps={trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else "")

    # ---- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["covr"] = checkpoint_payload(self.model, {**self.model_cfg, "query_frames": self._query_frames()})

    def _query_frames(self) -> dict[str, Any] | None:
        """The reference frames this run's queries see (data.num_reference_frames, data.reference_sampling),
        recorded so that evaluation encodes queries the same way."""
        data = getattr(getattr(getattr(self, "_trainer", None), "datamodule", None), "cfg", None)
        if not data:
            return self.model.query_frames
        return {"num_frames": int(data.get("num_reference_frames", 1)), "strategy": data.get("reference_sampling", "middle")}

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.train(mode)  # keeps frozen parts in eval mode
        return self


def _first_occurrences(index: Tensor) -> Tensor:
    """Positions of the first occurrence of each value in `index`, in order."""
    seen: set[int] = set()
    keep = []
    for i, value in enumerate(index.tolist()):
        if value not in seen:
            seen.add(value)
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long, device=index.device)


def _gather_rows(module: pl.LightningModule, *tensors: Tensor) -> list[Tensor]:
    """all_gather rows of different counts per rank (padded to the largest), then drop the padding."""
    n = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    counts = module.all_gather(n).flatten().tolist()
    most = max(counts)
    out = []
    for t in tensors:
        padded = torch.cat([t, t.new_zeros(most - t.shape[0], *t.shape[1:])]) if t.shape[0] < most else t
        gathered = module.all_gather(padded)  # [world, most, ...]
        out.append(torch.cat([gathered[r, : counts[r]] for r in range(len(counts))]))
    return out
