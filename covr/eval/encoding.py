"""Encode galleries (with an on-disk cache) and queries through the retriever interface.

The retriever is any module with `encode_query(frames, edit_text, caption=None, frame_mask=None)`
and `encode_target(frames, frame_weights=None, frame_mask=None)` returning per-token normalised
[B, Q, E], plus `image_size` and `identity` (a stable hash of architecture + weights).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from covr.data.errors import MissingVideosError
from covr.eval.datasets.base import Query
from covr.eval.frames import iterate_frames
from covr.models.similarity import SimilarityMode, pool_tokens

CACHE_FORMAT = 1
log = logging.getLogger(__name__)


@dataclass
class FrameOptions:
    """How files become frames: the retriever's size, frames per item, decoder strategy, loader."""

    image_size: int
    num_frames: int = 1
    strategy: str = "middle"
    batch_size: int = 32
    num_workers: int = 0


@dataclass
class GalleryEmbeddings:
    """Embeddings of the readable gallery items (gallery order) and the unreadable ones skipped."""

    ids: list[str]
    embeddings: Tensor  # [N, E] (mode "mean") or [N, Q, E] (mode "max")
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    cache: str = "off"  # "off", "hit" or "miss"


def _stored(tokens: Tensor, mode: SimilarityMode, dtype: torch.dtype) -> Tensor:
    """[B, Q, E] -> what the gallery keeps: pooled [B, E] for "mean", tokens for "max"."""
    return (pool_tokens(tokens) if mode == "mean" else tokens).to(device="cpu", dtype=dtype)


def gallery_cache_key(fields: Mapping[str, Any], ids: Sequence[str], paths: Sequence[Path]) -> str:
    """Hash of the cache-key fields and of the gallery listing (so an edited listing re-encodes)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({**fields, "format": CACHE_FORMAT}, sort_keys=True, default=str).encode())
    for image_id, path in zip(ids, paths):
        digest.update(f"{image_id}\t{path}\n".encode())
    return digest.hexdigest()


def encode_gallery(
    retriever: nn.Module,
    ids: Sequence[str],
    paths: Sequence[Path],
    frames: FrameOptions,
    mode: SimilarityMode,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    description: str = "gallery",
) -> GalleryEmbeddings:
    """Encode every readable gallery file; unreadable or missing ones are skipped and listed."""
    store: Tensor | None = None
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    batches = iterate_frames(
        paths, frames.image_size, frames.num_frames, frames.strategy, frames.batch_size, frames.num_workers, description
    )
    for batch in batches:
        skipped += [(ids[i], reason) for i, reason in batch.failures]
        if batch.frames is None:
            continue
        out = retriever.encode_target(batch.frames.to(device), frame_mask=batch.frame_mask.to(device))  # [B, Q, E]
        out = _stored(out, mode, dtype)
        if store is None:  # filled in place: no list of batches, no concatenation copy
            store = out.new_empty(len(ids), *out.shape[1:])
        store[len(kept) : len(kept) + out.shape[0]] = out
        kept += batch.indices.tolist()
    if store is None:
        reason = skipped[0][1] if skipped else "empty gallery"
        raise MissingVideosError(f"no gallery item could be read ({len(skipped)} tried), e.g. {reason}")
    embeddings = store if len(kept) == len(ids) else store[: len(kept)].clone()
    return GalleryEmbeddings([ids[i] for i in kept], embeddings, skipped)


def cached_gallery(
    retriever: nn.Module,
    ids: Sequence[str],
    paths: Sequence[Path],
    frames: FrameOptions,
    mode: SimilarityMode,
    device: torch.device,
    dtype: torch.dtype,
    cache_dir: Path | None,
    key_fields: Mapping[str, Any],
    description: str = "gallery",
) -> GalleryEmbeddings:
    """`encode_gallery`, reusing `cache_dir/<key>.pt` when the same key was encoded before."""
    if cache_dir is None:
        return encode_gallery(retriever, ids, paths, frames, mode, device, dtype, description)
    key = gallery_cache_key(key_fields, ids, paths)
    path = Path(cache_dir) / f"{description.replace('/', '-')}-{key[:20]}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated or foreign file is re-encoded, not trusted
            log.warning("ignoring unreadable gallery cache %s (%s)", path, error)
            saved = {}
        if saved.get("key") == key:
            skipped = [tuple(s) for s in saved["skipped"]]
            return GalleryEmbeddings(saved["ids"], saved["embeddings"], skipped, cache="hit")
    result = encode_gallery(retriever, ids, paths, frames, mode, device, dtype, description)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".tmp{os.getpid()}")
    record = {"key": key, "fields": dict(key_fields), "ids": result.ids, "embeddings": result.embeddings}
    torch.save({**record, "skipped": [list(s) for s in result.skipped]}, partial)
    os.replace(partial, path)  # atomic: a crashed run never leaves a half-written cache
    result.cache = "miss"
    return result


def check_references(queries: Sequence[Query], drop: bool) -> tuple[list[Query], list[tuple[str, str]]]:
    """Queries whose reference file exists, and (query id, reason) of the others.

    Without `drop`, any missing reference raises MissingVideosError naming the query and file.
    """
    missing = [(q, f"{q.reference_path}: file not found") for q in queries if not Path(q.reference_path).is_file()]
    return _drop_or_fail(queries, missing, drop)


def _drop_or_fail(
    queries: Sequence[Query], failed: list[tuple[Query, str]], drop: bool
) -> tuple[list[Query], list[tuple[str, str]]]:
    """Raise for the first failed query unless `drop`; else (the other queries, (id, reason) of failed)."""
    if failed and not drop:
        q, reason = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise MissingVideosError(
            f"query {q.id}: reference {q.reference!r} unreadable: {reason}{more}; "
            "set drop_missing_references to evaluate without such queries"
        )
    bad = {id(q) for q, _ in failed}
    return [q for q in queries if id(q) not in bad], [(q.id, reason) for q, reason in failed]


def encode_queries(
    retriever: nn.Module,
    queries: Sequence[Query],
    captions: Sequence[str] | None,
    frames: FrameOptions,
    device: torch.device,
    drop: bool,
) -> tuple[list[Query], Tensor, list[tuple[str, str]]]:
    """Encode queries -> (kept queries, pooled embeddings [Bq, E] on `device`, dropped (id, reason)).

    An unreadable reference raises MissingVideosError unless `drop`.
    """
    paths = [q.reference_path for q in queries]
    chunks: list[Tensor] = []
    kept: list[int] = []
    failed: list[tuple[Query, str]] = []
    batches = iterate_frames(
        paths, frames.image_size, frames.num_frames, frames.strategy, frames.batch_size, frames.num_workers, "queries"
    )
    for batch in batches:
        failed += [(queries[i], reason) for i, reason in batch.failures]
        _drop_or_fail(queries, failed, drop)  # without `drop`, fail at the first unreadable reference
        if batch.frames is None:
            continue
        rows = batch.indices.tolist()
        out = retriever.encode_query(
            batch.frames.to(device),
            [queries[i].text for i in rows],
            caption=[captions[i] for i in rows] if captions is not None else None,
            frame_mask=batch.frame_mask.to(device),
        )  # [B, Q, E]
        chunks.append(pool_tokens(out).float())
        kept += rows
    if not chunks:
        raise MissingVideosError("no query reference could be read")
    return [queries[i] for i in kept], torch.cat(chunks), [(q.id, reason) for q, reason in failed]
