"""Gallery embeddings cached per item, so a video is encoded once for every benchmark and run that
ranks it (WebVid-CoVR and Dense-WebVid-CoVR share their test videos; EgoCVR's global and local
galleries share clips; CIRCO val and test share the COCO images).

Cache files live in one folder: `<key>-<segment>.pt`, where <key> hashes what changes an
embedding (the target encoder's identity, frames and their sampling, image size, preprocessing,
the stored form, dtype) and a segment holds the items one run encoded:
  {"key", "fields", "items": [item key], "embeddings": [n, ...], "frame_mask": [n, F] | None,
   "skipped": [[item key, reason]]}
An item key is the item's media text (a clip includes its span) with the file's size and
modification time, so a replaced file is encoded again. A run loads the segments of its key
(memory-mapped: only the rows it needs are read), encodes only the items none of them holds, and
writes those as a new segment. An unreadable segment is deleted and its items encoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from covr.eval.encoding import FrameOptions, ItemEmbeddings, encode_gallery
from covr.eval.media import Media, media_key

CACHE_FORMAT = 3
log = logging.getLogger(__name__)


def item_key(item: Media) -> str:
    """media text | size | mtime (ns); a file that cannot be stat'ed keys on its text alone."""
    try:
        info = os.stat(os.fspath(item))
        return f"{media_key(item)}|{info.st_size}|{info.st_mtime_ns}"
    except OSError:
        return media_key(item)


def cache_key(fields: Mapping[str, Any]) -> str:
    """Hash of the fields that change an embedding (and of the cache format)."""
    return hashlib.sha256(json.dumps({**fields, "format": CACHE_FORMAT}, sort_keys=True, default=str).encode()).hexdigest()


def _segments(cache_dir: Path, key: str) -> list[dict[str, Any]]:
    segments = []
    for path in sorted(cache_dir.glob(f"{key[:20]}-*.pt")):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # truncated or foreign: encode its items again rather than trust it
            log.warning("deleting unreadable gallery cache file %s (%s)", path, error)
            path.unlink(missing_ok=True)
            continue
        if isinstance(saved, dict) and saved.get("key") == key:
            segments.append(saved)
    return segments


def _write_segment(cache_dir: Path, key: str, fields: Mapping[str, Any], keys: Sequence[str], result: ItemEmbeddings, skipped: list) -> None:
    name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]
    path = cache_dir / f"{key[:20]}-{name}.pt"
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".tmp{os.getpid()}")
    record = {"key": key, "fields": dict(fields), "items": list(keys), "embeddings": result.embeddings, "frame_mask": result.frame_mask}
    torch.save({**record, "skipped": skipped}, partial)
    os.replace(partial, path)  # atomic: a crashed run never leaves a half-written file


def cached_gallery(
    retriever: nn.Module,
    ids: Sequence[str],
    paths: Sequence[Media],
    frames: FrameOptions,
    level: str,
    renormalise: bool,
    device: torch.device,
    dtype: torch.dtype,
    cache_dir: Path | None,
    key_fields: Mapping[str, Any],
    description: str = "gallery",
) -> ItemEmbeddings:
    """`encode_gallery` for the items no cache segment of this key holds; the rest read from the cache.

    `cache` of the result: "off", "hit" (nothing encoded), "miss" (everything encoded) or
    "partial (n of N encoded)"."""
    encode = (frames, level, renormalise, device, dtype, description)
    if cache_dir is None:
        return encode_gallery(retriever, ids, paths, *encode)
    key = cache_key(key_fields)
    keys = [item_key(p) for p in paths]
    found: dict[str, tuple[int, int]] = {}  # item key -> (segment, row)
    failed: dict[str, str] = {}
    segments = _segments(Path(cache_dir), key)
    for s, saved in enumerate(segments):
        for row, item in enumerate(saved["items"]):
            found.setdefault(item, (s, row))
        for item, reason in saved["skipped"]:
            failed.setdefault(item, reason)
    todo = [i for i, k in enumerate(keys) if k not in found and k not in failed]
    if todo:
        new = encode_gallery(retriever, [ids[i] for i in todo], [paths[i] for i in todo], *encode)
        position = {gallery_id: row for row, gallery_id in enumerate(new.ids)}
        reasons = dict(new.skipped)
        done = [keys[i] for i in todo if ids[i] in position]
        skipped = [[keys[i], reasons[ids[i]]] for i in todo if ids[i] in reasons]
        _write_segment(Path(cache_dir), key, key_fields, done, new, skipped)
        segments.append({"embeddings": new.embeddings, "frame_mask": new.frame_mask})
        for i in todo:
            if ids[i] in position:
                found[keys[i]] = (len(segments) - 1, position[ids[i]])
            else:
                failed[keys[i]] = reasons[ids[i]]
    kept = [i for i, k in enumerate(keys) if k in found]
    return _assemble(
        segments, [found[keys[i]] for i in kept], [ids[i] for i in kept], level,
        [(ids[i], failed[k]) for i, k in enumerate(keys) if k not in found], len(todo), len(ids),
    )  # fmt: skip


def _assemble(
    segments: list[dict[str, Any]], where: list[tuple[int, int]], ids: list[str], level: str, skipped: list, encoded: int, total: int
) -> ItemEmbeddings:
    """The kept items' rows gathered from their segments, in gallery order."""
    sample = next((s["embeddings"] for s in segments if len(s["embeddings"])), None)
    shape = tuple(sample.shape[1:]) if sample is not None else (0,)
    embeddings = torch.zeros((len(ids), *shape), dtype=sample.dtype if sample is not None else torch.float32)
    frame_mask = torch.zeros(len(ids), shape[0], dtype=torch.bool) if level == "frames" and sample is not None else None
    for s, segment in enumerate(segments):
        rows = [(out, row) for out, (seg, row) in enumerate(where) if seg == s]
        if not rows:
            continue
        out_rows = torch.tensor([o for o, _ in rows], dtype=torch.long)
        seg_rows = torch.tensor([r for _, r in rows], dtype=torch.long)
        embeddings[out_rows] = segment["embeddings"][seg_rows]
        if frame_mask is not None:
            frame_mask[out_rows] = segment["frame_mask"][seg_rows]
    cache = "hit" if encoded == 0 else "miss" if encoded == total else f"partial ({encoded} of {total} encoded)"
    return ItemEmbeddings(ids, embeddings, frame_mask, level, skipped, cache)
