"""Offline extraction of per-frame target embeddings (and of target-caption text features) into an
``EmbeddingStore`` (the core of covr-extract-embeddings).

The encoder is anything with the retriever's target interface::

    encoder.encode_target_frames(frames [B, F, 3, H, W], frame_mask [B, F] | None) -> [B, F, Q, E]
    encoder.image_size: int      encoder.target_identity (or .identity): str

The store is stamped with ``target_identity`` when the encoder has one (target embeddings depend
on the target path only), else with ``identity``.

Sharding: shard k of K handles global rows i with i % K == k (see embedding_store). Resuming:
rows already marked done are skipped; rows whose video fails to decode stay pending, are listed
in ``<store>/failed-shard-<k>.txt`` and are retried by the next run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from covr.data.annotations import read_webvid_covr_csv
from covr.data.collate import pad_frames
from covr.data.embedding_store import EmbeddingStore
from covr.data.errors import VideoDecodeError
from covr.data.text import clean_text
from covr.data.transforms import TestTransform, to_model_input
from covr.data.video import IMAGE_SUFFIXES, load_frames
from covr.progress import Progress
from covr.progress import progress as iterate

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".avi", ".mov"}


def videos_from_csv(csv_path: str | Path, video_root: str | Path, include_references: bool = False, suffix: str = ".mp4") -> list[tuple[str, Path]]:
    """(id, path) of the unique targets (pth2) of a WebVid-CoVR CSV, plus references (pth1) if asked; first-seen order."""
    ann = read_webvid_covr_csv(csv_path)
    codes = np.concatenate([ann.target, ann.reference]) if include_references else ann.target
    _, first = np.unique(codes, return_index=True)
    ordered = codes[np.sort(first)]
    return [(ann.video_ids[c], Path(video_root) / f"{ann.video_ids[c]}{suffix}") for c in ordered.tolist()]


def videos_from_folder(folder: str | Path) -> list[tuple[str, Path]]:
    """(id, path) of every video / image under a folder; id = relative path without extension, sorted."""
    folder = Path(folder)
    media = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES]
    return sorted((p.relative_to(folder).with_suffix("").as_posix(), p) for p in media)


def shard_from_env(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """(num_shards, shard_id) from SLURM_NTASKS/SLURM_PROCID, else WORLD_SIZE/RANK, else (1, 0)."""
    env = os.environ if environ is None else environ
    for size_key, rank_key in (("SLURM_NTASKS", "SLURM_PROCID"), ("WORLD_SIZE", "RANK")):
        if size_key in env and rank_key in env:
            return int(env[size_key]), int(env[rank_key])
    return 1, 0


class _FramesDataset(Dataset):
    """Global store row -> {"row", "frames" uint8 [F, 3, S, S]} or {"row", "error"} on decode failure.

    Frames travel as uint8 (4x less than float32 between processes and to the GPU) and are
    normalised on the device by ``to_model_input``.
    """

    def __init__(self, videos: list[tuple[str, Path]], rows: np.ndarray, num_frames: int, image_size: int) -> None:
        self.videos, self.rows, self.num_frames = videos, rows, num_frames
        self.transform = TestTransform(image_size, output_dtype="uint8")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = int(self.rows[index])
        try:
            frames = load_frames(self.videos[row][1], self.num_frames, "uniform")  # uint8 [F, H, W, 3]
        except VideoDecodeError as error:
            return {"row": row, "error": str(error)}
        return {"row": row, "frames": self.transform(frames)}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [item for item in items if "frames" in item]
    batch: dict[str, Any] = {"failed": [(item["row"], item["error"]) for item in items if "error" in item]}
    batch["rows"] = np.array([item["row"] for item in good], dtype=np.int64)
    if good:
        batch["frames"], batch["frame_mask"] = pad_frames([item["frames"] for item in good])  # [B, F, 3, S, S], [B, F]
    return batch


@dataclass
class ExtractionResult:
    store: EmbeddingStore
    written: int = 0
    already_done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)


@torch.inference_mode()
def extract_embeddings(
    encoder: torch.nn.Module,
    videos: list[tuple[str, Path]],
    store_path: str | Path,
    num_frames: int = 15,
    mean_tokens: bool = False,
    num_shards: int = 1,
    shard_id: int = 0,
    batch_size: int = 8,
    num_workers: int = 2,
    dtype: str = "float16",
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> ExtractionResult:
    """Encode ``num_frames`` uniformly sampled frames of each video of this shard into the store.

    Stored per video: [F, Q, E] (or [F, E] with ``mean_tokens``: token mean, exact for mean-pooled
    similarity because the encoder normalises per token before anything linear).
    """
    encoder = encoder.eval().to(device)
    size = int(encoder.image_size)
    probe = encoder.encode_target_frames(torch.zeros(1, 1, 3, size, size, device=device))  # [1, 1, Q, E]
    frame_shape = tuple(probe.shape[3:]) if mean_tokens else tuple(probe.shape[2:])
    ids = [video_id for video_id, _ in videos]
    identity = str(getattr(encoder, "target_identity", None) or encoder.identity)
    store = EmbeddingStore.create(store_path, ids, identity, frame_shape, num_frames, dtype, num_shards)
    writer = store.writer(shard_id)
    pending = writer.pending_rows()
    result = ExtractionResult(store, already_done=len(writer.rows) - len(pending))
    log.info("shard %d/%d: %d videos to encode, %d already done", shard_id, num_shards, len(pending), result.already_done)
    loader = DataLoader(
        _FramesDataset(videos, pending, num_frames, size), batch_size=batch_size, num_workers=num_workers,
        collate_fn=_collate, pin_memory=torch.device(device).type == "cuda",
    )  # fmt: skip
    with Progress(len(pending), f"extract shard {shard_id}/{num_shards}", unit="videos", enabled=progress) as bar:
        for batch in loader:
            for row, reason in batch["failed"]:
                log.warning("cannot encode %s: %s", ids[row], reason)
                result.failed.append((ids[row], reason))
            if len(batch["rows"]):
                mask = batch["frame_mask"].to(device)
                frames = to_model_input(batch["frames"].to(device, non_blocking=True))  # [B, F, 3, S, S] float
                out = encoder.encode_target_frames(frames, frame_mask=mask)
                out = out.mean(dim=2) if mean_tokens else out  # [B, F, Q, E] -> [B, F, E]
                out = out * mask.reshape(*mask.shape, *([1] * (out.dim() - 2))).to(out.dtype)  # zero padded frames
                writer.write(batch["rows"], out.float().cpu().numpy(), mask.sum(dim=1).cpu().numpy())
                result.written += len(batch["rows"])
            bar.update(len(batch["rows"]) + len(batch["failed"]))
    if result.failed:
        failed_path = Path(store_path) / f"failed-shard-{shard_id}.txt"
        failed_path.write_text("".join(f"{video_id}\t{reason}\n" for video_id, reason in result.failed))
        log.warning("%d videos failed to decode (left pending for a rerun); list in %s", len(result.failed), failed_path)
    return result


def captions_from_csv(csv_path: str | Path, max_words: int = 30) -> list[str]:
    """The unique target captions (txt2) of a WebVid-CoVR CSV, cleaned as the dataset cleans them
    (the keys of a text store), in first-seen order; empty captions are left out."""
    ann = read_webvid_covr_csv(csv_path)
    texts = (clean_text(ann.caption(row, "target"), max_words) for row in range(len(ann)))
    return [t for t in dict.fromkeys(texts) if t]


@torch.inference_mode()
def extract_caption_embeddings(
    encoder: torch.nn.Module,
    texts: list[str],
    store_path: str | Path,
    batch_size: int = 256,
    dtype: str = "float16",
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> ExtractionResult:
    """Write `encoder.encode_text` features [E] of every text into a text store (kind "text", keyed by
    the text, stamped with the encoder's `text_identity`): CoVR-2's frozen target-caption features.
    Resumes like the video stores (finished rows are kept)."""
    encoder = encoder.eval().to(device)
    dim = int(encoder.encode_text(["a"]).shape[-1])
    store = EmbeddingStore.create(store_path, list(texts), str(encoder.text_identity), (dim,), 1, dtype, 1, kind="text")
    writer = store.writer(0)
    pending = writer.pending_rows()
    result = ExtractionResult(store, already_done=len(texts) - len(pending))
    for start in iterate(range(0, len(pending), batch_size), "extract captions", unit="batches", enabled=progress):
        rows = pending[start : start + batch_size]
        features = encoder.encode_text([texts[i] for i in rows.tolist()])  # [B, E]
        writer.write(rows, features.float().cpu().numpy()[:, None], np.ones(len(rows), dtype=np.int32))
        result.written += len(rows)
    return result
