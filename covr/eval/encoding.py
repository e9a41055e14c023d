"""Encode galleries (or read them from an embedding store) and queries through the retriever
interface; the on-disk gallery cache is covr.eval.gallery_cache.

The retriever is any module with `encode_query(frames, edit_text, caption=None, frame_mask=None)`
-> per-token normalised [B, Q, E], `encode_target_frames(frames, frame_mask=None)` -> [B, F, Q, E],
`image_size`, and `identity` / `target_identity` (stable hashes of the weights).

A gallery is kept at the least detailed level its protocol needs (covr.eval.protocols.gallery_level):
"frames" [G, F, Q, E] with a frame mask, "tokens" [G, Q, E] or "mean" [G, E], the last two pooled
uniformly over the real frames (and re-normalised per token when the protocol says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from covr.data.embedding_store import EmbeddingStore
from covr.eval.datasets.base import Query
from covr.eval.frames import iterate_frames
from covr.similarity import pool_frames, pool_tokens


@dataclass
class FrameOptions:
    """How files become frames: the retriever's size, frames per item, decoder strategy, loader."""

    image_size: int
    num_frames: int = 1
    strategy: str = "middle"
    batch_size: int = 32
    num_workers: int = 0


@dataclass
class ItemEmbeddings:
    """A benchmark gallery encoded for scoring: the readable items' embeddings by id (gallery order)
    at the protocol's level, the unreadable items skipped, and where the embeddings came from."""

    ids: list[str]
    embeddings: Tensor  # level "frames": [G, F, Q, E]; "tokens": [G, Q, E]; "mean": [G, E]
    frame_mask: Tensor | None = None  # [G, F] bool, level "frames" only
    level: str = "mean"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    cache: str = "off"  # "off", "hit", "miss" or "store"


def reduce_frames(frames: Tensor, mask: Tensor, level: str, renormalise: bool) -> Tensor:
    """[B, F, Q, E] per-frame tokens -> the stored form of `level` (uniform frame pooling)."""
    if level == "frames":
        return frames
    tokens = pool_frames(frames, None, mask)  # [B, Q, E] (or [B, E] from a token-mean store)
    if renormalise:
        tokens = F.normalize(tokens, dim=-1)
    return tokens if level == "tokens" else pool_tokens(tokens)


def encode_gallery(
    retriever: nn.Module,
    ids: Sequence[str],
    paths: Sequence[Path],
    frames: FrameOptions,
    level: str,
    renormalise: bool,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    description: str = "gallery",
) -> ItemEmbeddings:
    """Encode every readable gallery file; files that fail to decode are skipped and listed."""
    store: Tensor | None = None
    mask_store = torch.zeros(len(ids), frames.num_frames, dtype=torch.bool)
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    batches = iterate_frames(
        paths, frames.image_size, frames.num_frames, frames.strategy, frames.batch_size, frames.num_workers, description
    )
    for batch in batches:
        skipped += [(ids[i], reason) for i, reason in batch.failures]
        if batch.frames is None:
            continue
        mask = batch.frame_mask.to(device)
        out = retriever.encode_target_frames(batch.frames.to(device), frame_mask=mask)  # [B, F, Q, E]
        out = reduce_frames(out, mask, level, renormalise).to(device="cpu", dtype=dtype)
        if store is None:  # filled in place: no list of batches, no concatenation copy
            shape = (len(ids), frames.num_frames, *out.shape[2:]) if level == "frames" else (len(ids), *out.shape[1:])
            store = out.new_zeros(shape)
        rows = slice(len(kept), len(kept) + out.shape[0])
        if level == "frames":
            store[rows, : out.shape[1]] = out
            mask_store[rows, : out.shape[1]] = batch.frame_mask
        else:
            store[rows] = out
        kept += batch.indices.tolist()
    if store is None:
        store = torch.zeros(0)
    complete = len(kept) == len(ids)
    embeddings = store if complete else store[: len(kept)].clone()
    frame_mask = (mask_store if complete else mask_store[: len(kept)].clone()) if level == "frames" else None
    return ItemEmbeddings([ids[i] for i in kept], embeddings, frame_mask, level, skipped)


def gallery_from_store(
    store: EmbeddingStore, ids: Sequence[str], level: str, renormalise: bool, dtype: torch.dtype = torch.float32
) -> ItemEmbeddings:
    """A gallery read from precomputed per-frame embeddings (e.g. CoVR's released ones, imported);
    ids without embeddings are skipped with that reason."""
    present = [i for i in ids if i in store]
    skipped = [(i, f"no embedding in store {store.path}") for i in ids if i not in store]
    f = store.max_frames
    embeddings = torch.zeros(len(present), f, *store.frame_shape, dtype=dtype)
    mask = torch.zeros(len(present), f, dtype=torch.bool)
    for row, video_id in enumerate(present):
        values, n = store.get(video_id)  # [n, (Q,) E]
        embeddings[row, :n] = torch.from_numpy(np.asarray(values, dtype=np.float32)).to(dtype)
        mask[row, :n] = True
    if level != "frames":
        embeddings = reduce_frames(embeddings.float(), mask, level, renormalise).to(dtype)
    return ItemEmbeddings(present, embeddings, mask if level == "frames" else None, level, skipped, cache="store")


def _text_queries(retriever: nn.Module, queries: Sequence[Query], rows: list[int], batch_size: int, device: torch.device) -> list[Tensor]:
    """E_T of text-only queries, one [1, E] row each (the text encoder's normalised feature)."""
    if rows and not hasattr(retriever, "encode_text"):
        raise ValueError(f"text-only queries need a retriever with a text encoder (encode_text); {type(retriever).__name__} has none")
    out: list[Tensor] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        out += list(retriever.encode_text([queries[i].text for i in chunk]).float().to(device)[:, None])
    return out


def encode_queries(
    retriever: nn.Module, queries: Sequence[Query], captions: Sequence[str] | None, frames: FrameOptions, device: torch.device
) -> tuple[list[Query], Tensor, list[tuple[str, str]]]:
    """Encode queries -> (encoded queries, tokens [Bq, Q, E] fp32 on `device`, (id, reason) of the
    queries whose reference failed to decode). A composed query goes through `encode_query`; an
    image-only one through the target encoder (its frames pooled: image-to-image retrieval); a
    text-only one through `encode_text`, its feature repeated over the Q tokens of the others."""
    visual = [i for i, q in enumerate(queries) if q.modality != "text"]
    rows_out: dict[int, Tensor] = {}
    failed: list[tuple[str, str]] = []
    batches = iterate_frames(
        [queries[i].reference_path for i in visual], frames.image_size, frames.num_frames, frames.strategy, frames.batch_size,
        frames.num_workers, "queries",
    )  # fmt: skip
    for batch in batches:
        failed += [(queries[visual[i]].id, f"reference {queries[visual[i]].reference}: {reason}") for i, reason in batch.failures]
        if batch.frames is None:
            continue
        rows = [visual[i] for i in batch.indices.tolist()]
        clips, mask = batch.frames.to(device), batch.frame_mask.to(device)
        composed = torch.tensor([queries[i].modality == "composed" for i in rows], device=device)
        out: Tensor | None = None
        if composed.any():
            chosen = [i for i in rows if queries[i].modality == "composed"]
            encoded = retriever.encode_query(
                clips[composed], [queries[i].text for i in chosen],
                caption=[captions[i] for i in chosen] if captions is not None else None, frame_mask=mask[composed],
            ).float()  # fmt: skip
            out = encoded if encoded.dim() == 3 else encoded[:, None]
        if not composed.all():  # image-only queries: the gallery's own embedding of the reference
            images = pool_frames(retriever.encode_target_frames(clips[~composed], frame_mask=mask[~composed]).float(), None, mask[~composed])
            images = images if images.dim() == 3 else images[:, None]
            out = images if out is None else torch.cat([out, images])
        order = [i for i in rows if queries[i].modality == "composed"] + [i for i in rows if queries[i].modality != "composed"]
        rows_out.update(zip(order, out))
    texts = [i for i, q in enumerate(queries) if q.modality == "text"]
    rows_out.update(zip(texts, _text_queries(retriever, queries, texts, frames.batch_size, device)))
    kept = sorted(rows_out)
    if not kept:
        return [], torch.zeros(0, 1, 1, device=device), failed
    width = max(rows_out[i].shape[0] for i in kept)
    uneven = {rows_out[i].shape[0] for i in kept} - {1, width}
    if uneven:
        raise ValueError(f"query embeddings have {sorted(uneven | {width})} tokens; only one-token (text) rows can be widened")
    tokens = torch.stack([rows_out[i].expand(width, -1) for i in kept])
    return [queries[i] for i in kept], tokens, failed
