"""LightningDataModule over WebVid-CoVR-format data, with data loaders that resume mid-epoch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from covr.data.collate import EpochSampler, collate_covr
from covr.data.grouped_sampler import ReferenceGroupedSampler, dataset_references
from covr.data.shared_slots import SlotDataLoader
from covr.data.transforms import build_transform
from covr.data.webvid_covr import WebVidCoVRDataset

log = logging.getLogger(__name__)


class ResumableDataLoader(SlotDataLoader):
    """A DataLoader whose position inside an epoch is saved in Lightning checkpoints.

    Lightning stores `state_dict()` of stateful train loaders and calls `load_state_dict` before
    it iterates again after a restart; the sampler then skips the batches already trained on, so
    a resumed run sees exactly the samples an uninterrupted run would."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches_done = 0  # set by the training module after every optimiser step's batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches_done": int(self.batches_done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # Lightning restores this before it sets the epoch and iterates: set both here
        self.sampler.set_epoch(int(state["epoch"]))
        self.sampler.skip(int(state["batches_done"]) * int(self.batch_size), epoch=int(state["epoch"]))
        self.batches_done = int(state["batches_done"])


class CoVRDataModule(pl.LightningDataModule):
    """Train / val WebVid-CoVR datasets and loaders from the `data` config (see conf/data/)."""

    def __init__(self, cfg: dict[str, Any], image_size: int, store_identity: str | None = None, report_dir: str | Path | None = None, seed: int = 0):
        super().__init__()
        self.cfg = dict(cfg)
        self.image_size = image_size
        self.store_identity = store_identity
        self.report_dir = report_dir
        self.seed = seed
        self.train_dataset: WebVidCoVRDataset | None = None
        self.val_dataset: WebVidCoVRDataset | None = None

    def _dataset(self, split: str) -> WebVidCoVRDataset:
        c = self.cfg
        part = c[split]
        store = part.get("store", c.get("store")) if c.get("target_source", "frames") == "store" else None
        train = split == "train"
        options = {"output_dtype": c.get("frame_dtype", "float32"), **(c.get("augment") or {})}
        transform = build_transform(train, self.image_size, **options) if train else None
        return WebVidCoVRDataset(
            part["csv"],
            part["video_root"],
            split=split,
            num_reference_frames=int(c.get("num_reference_frames", 1)),
            reference_sampling=c.get("reference_sampling", "middle") if not train else c.get("train_reference_sampling", c.get("reference_sampling", "middle")),
            target_source="store" if store else "frames",
            store=store,
            store_identity=self.store_identity,
            # CoVR-2's frozen caption features, once prepare_caption_store has checked the store (and set its identity)
            caption_store=c.get("caption_store") if train and c.get("caption_store_identity") else None,
            caption_store_identity=c.get("caption_store_identity"),
            num_target_frames=int(c.get("num_target_frames", 15)),
            transform=transform,
            image_size=self.image_size,
            frame_dtype=c.get("frame_dtype", "float32"),
            epoch_mode=c.get("epoch_mode") if train else "all_triplets",
            report_dir=self.report_dir,
            seed=self.seed,
            max_words=int(c.get("max_words", 30)),
            corrective_triplets=c.get("corrective_triplets") if train else None,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._dataset("train")
            if self.cfg.get("val"):
                self.val_dataset = self._dataset("val")

    def train_batches_per_epoch(self, world_size: int = 1) -> int:
        """Batches each process draws per epoch (drop_last sampler and loader)."""
        self.setup("fit")
        return len(self.train_dataset) // world_size // int(self.cfg["batch_size"])

    def _loader_kwargs(self, workers: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"num_workers": workers, "collate_fn": collate_covr, "pin_memory": bool(self.cfg.get("pin_memory", torch.cuda.is_available()))}
        if workers > 0:
            kwargs.update(persistent_workers=bool(self.cfg.get("persistent_workers", True)), prefetch_factor=int(self.cfg.get("prefetch_factor", 2)))
            if self.cfg.get("shared_slots") is not None:  # slots per worker (0: off); default prefetch_factor + 2
                kwargs["slots"] = int(self.cfg["shared_slots"])
        return kwargs

    def train_dataloader(self) -> ResumableDataLoader:
        if self.cfg.get("sampler", "random") == "grouped_by_reference":  # ReCALL: rows of one reference video together
            references = dataset_references(self.train_dataset)
            if self.train_dataset.epoch_mode == "unique_targets":
                log.warning("data.sampler=grouped_by_reference with epoch_mode unique_targets: one row per target, so most "
                            "reference groups hold a single row; data.epoch_mode=all_triplets keeps every row of a reference")  # fmt: skip
            sampler = ReferenceGroupedSampler(self.train_dataset, references, int(self.cfg.get("group_size", 4)), seed=self.seed, drop_last=True)
        else:
            sampler = EpochSampler(self.train_dataset, shuffle=True, seed=self.seed, drop_last=True)
        return ResumableDataLoader(
            self.train_dataset, batch_size=int(self.cfg["batch_size"]), sampler=sampler, drop_last=True, **self._loader_kwargs(int(self.cfg.get("num_workers", 4)))
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        sampler = EpochSampler(self.val_dataset, shuffle=False)
        batch = int(self.cfg.get("val_batch_size", self.cfg["batch_size"]))
        return SlotDataLoader(self.val_dataset, batch_size=batch, sampler=sampler, **self._loader_kwargs(int(self.cfg.get("num_workers", 4))))
