"""LightningModule: one training step = composed queries vs targets under HN-NCE over the global batch;
validation = recall of val queries against the val targets."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from covr.data.transforms import to_model_input
from covr.losses import ContrastiveLoss
from covr.models import build_retriever, checkpoint_payload
from covr.models.similarity import pool_tokens
from covr.models.trainable import format_trainable_summary, trainable_summary
from covr.training.optim import cosine_with_warmup, make_optimizer, parameter_groups
from covr.training.recall import recall_against_gallery

log = logging.getLogger(__name__)
# Frozen backbone parts are kept in eval mode on purpose (no dropout, see ComposedRetriever.train).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


class CoVRModule(pl.LightningModule):
    """Wraps a `ComposedRetriever` (`self.model`) with loss, optimisation and validation recall.

    Stages 1 and 2 train composed queries against target videos; stage 0 adapts the backbone
    with the same loss between target captions and target videos (validation: caption -> video).

    model_cfg: covr.models.build_retriever config; loss_cfg: ContrastiveLoss kwargs;
    optim_cfg: {lr, text_encoder_lr, weight_decay, betas, warmup_steps, min_lr_ratio, fused};
    recall_ks: the K of validation R@K (the checkpoint monitor is val/R1)."""

    def __init__(self, model_cfg: dict[str, Any], loss_cfg: dict[str, Any], optim_cfg: dict[str, Any], recall_ks: tuple[int, ...] = (1, 5, 10, 50)):
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = model_cfg
        self.model = build_retriever(model_cfg)
        self.loss = ContrastiveLoss(**loss_cfg)
        self.optim_cfg = dict(optim_cfg)
        self.recall_ks = tuple(recall_ks)
        self._val_outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        log.info("trainable parameters (stage %d):\n%s", self.model.stage, format_trainable_summary(trainable_summary(self.model)))

    # ---- steps -------------------------------------------------------------------------------
    def _query(self, batch: dict[str, Any]) -> Tensor:
        frames = to_model_input(batch["reference_frames"])  # uint8 batches are normalised here, on the device
        return self.model.encode_query(frames, batch["edit"], batch.get("reference_caption"), batch.get("reference_frame_mask"))

    def _target(self, batch: dict[str, Any]) -> Tensor:
        mask = batch.get("target_frame_mask")
        if "target_embedding" in batch:  # precomputed store: [B, F, (Q,) E]
            return self.model.encode_target_embeddings(batch["target_embedding"].float(), batch.get("target_weights"), mask)
        return self.model.encode_target(to_model_input(batch["target_frames"]), batch.get("target_weights"), mask)

    def _pair(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(query side, target side) of a batch: composed query vs target video; in stage 0 the
        target caption vs the target video (video-caption contrastive adaptation)."""
        if self.model.stage == 0:
            return self.model.encode_text(batch["target_caption"]), self._target(batch)
        return self._query(batch), self._target(batch)

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> Tensor | None:
        if batch is None:  # every sample of the batch failed to decode
            return None
        query, target = self._pair(batch)
        caption = self.model.encode_text(batch["target_caption"]) if self.loss.caption_weight and self.model.stage > 0 else None
        losses = self.loss(query, target, caption)
        b = query.shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=b)
        for name in ("video", "caption"):
            if name in losses:
                self.log(f"train/loss_{name}", losses[name], batch_size=b)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True, batch_size=b)
        if batch.get("num_dropped"):
            self.log("train/dropped_samples", float(batch["num_dropped"]), reduce_fx="sum", batch_size=b)
        return losses["loss"]

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # ResumableDataLoader's position as saved by a checkpoint at the end of this batch
        # (checkpoint callbacks run before the module's own on_train_batch_end)
        loader = self.trainer.train_dataloader
        if hasattr(loader, "batches_done"):
            loader.batches_done = batch_idx + 1

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is None:
            return
        query, target = (pool_tokens(x).float() for x in self._pair(batch))
        self._val_outputs.append((batch["index"].to(query.device, copy=True), query, target))  # a copy: batch tensors may view a recycled loader slot

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
        groups = parameter_groups(self.model, cfg["lr"], cfg.get("weight_decay", 0.05), cfg.get("text_encoder_lr"))
        optimizer = make_optimizer(groups, cfg.get("betas", (0.9, 0.999)), cfg.get("eps", 1e-8), cfg.get("fused"))
        total = self._total_steps()
        scheduler = cosine_with_warmup(optimizer, total, int(cfg.get("warmup_steps", 0)), float(cfg.get("min_lr_ratio", 0.0)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _total_steps(self) -> int:
        """Optimiser steps of the whole fit, for the schedule. Computed from the datamodule instead of
        `trainer.estimated_stepping_batches`, which would build the train loader before a resumed
        run restores its position (and so start the epoch from its first batch)."""
        trainer = self.trainer
        if trainer.max_steps and trainer.max_steps > 0:
            return int(trainer.max_steps)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "train_batches_per_epoch"):
            return int(trainer.estimated_stepping_batches)
        batches = datamodule.train_batches_per_epoch(trainer.world_size)
        limit = trainer.limit_train_batches
        batches = min(batches, int(limit)) if isinstance(limit, int) else int(batches * limit)
        return max(1, trainer.max_epochs * -(-batches // trainer.accumulate_grad_batches))

    # ---- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["covr"] = checkpoint_payload(self.model, self.model_cfg)

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
