"""Data preparation a run may do by itself: write the toy dataset, extract a target-embedding store
and a caption (text) store.

Each happens under a file lock, so the processes of a multi-GPU run (or two runs sharing a cache)
never write the same files at once; the second waits and then reuses the result."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from covr.data.embedding_store import EmbeddingStore
from covr.data.errors import EmbeddingStoreError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_data(data_cfg: Mapping[str, Any]) -> None:
    """Generate the toy dataset when the config asks for it (`toy:` block) and it is absent."""
    toy = data_cfg.get("toy")
    if not toy:
        return
    from covr.data.toy import generate_toy_dataset

    root = Path(toy["root"])
    with file_lock(root.parent / f".{root.name}.lock"):
        if (root / "toy-covr_test.csv").is_file():
            return
        log.info("writing the toy dataset to %s (first run only)", root)
        options = {k: v for k, v in dict(toy).items() if k != "root"}
        staging = root.parent / f".{root.name}.partial"
        generate_toy_dataset(staging, **options)
        staging.rename(root)  # a half-written dataset is never mistaken for a complete one


def prepare_store(data_cfg: dict[str, Any], model, work_dir: Path) -> str | None:
    """For `target_source: store`, return the identity the store must have. With `extract_store: true`
    (toy runs) the store is written, under `<store>/<target identity>[-tokens]`, by the run's own frozen target
    encoder when absent or incomplete, and `data_cfg["store"]` is pointed at it."""
    if data_cfg.get("target_source", "frames") != "store":
        return None
    identity = model.target_identity
    if not data_cfg.get("extract_store"):
        return identity
    from covr.data.extract import extract_embeddings, videos_from_csv

    mean_tokens = bool(data_cfg.get("store_mean_tokens", True))
    path = Path(data_cfg["store"]) / (identity if mean_tokens else f"{identity}-tokens")  # the two layouts never share a folder
    with file_lock(path.parent / f".{path.name}.lock"):
        if not _complete(path, identity):
            videos: dict[str, Path] = {}
            for split in ("train", "val"):
                if data_cfg.get(split):
                    part = data_cfg[split]
                    videos.update(videos_from_csv(part["csv"], part["video_root"]))
            log.info("extracting target embeddings of %d videos into %s", len(videos), path)
            result = extract_embeddings(
                model, sorted(videos.items()), path, num_frames=int(data_cfg.get("num_target_frames", 15)),
                mean_tokens=mean_tokens, batch_size=int(data_cfg.get("extract_batch_size", 16)),
                num_workers=int(data_cfg.get("num_workers", 2)),
            )  # fmt: skip
            if result.failed:
                log.warning("%d videos could not be encoded; their rows will be skipped", len(result.failed))
    data_cfg["store"] = str(path)
    return identity


def _complete(path: Path, identity: str) -> bool:
    try:
        store = EmbeddingStore.open(path, identity)
    except EmbeddingStoreError:
        return False
    return not store.missing_ids()


def prepare_caption_store(data_cfg: dict[str, Any], model, loss_cfg: Mapping[str, Any]) -> str | None:
    """CoVR-2's caption term from precomputed, frozen caption features (`caption_features: store`):
    check the text store against the model's text encoder (`text_identity`) and that it holds every
    cleaned target caption of the train split, before training starts. With `extract_caption_store:
    true` (toy runs) the run's own text encoder writes it under `<caption_store>/<text identity>`.
    Sets `data_cfg["caption_store"]` / `["caption_store_identity"]` for the data module; returns the
    identity, or None when the caption term is off or encoded online (`caption_features: online`)."""
    if not loss_cfg.get("caption_weight") or model.stage == 0 or data_cfg.get("caption_features", "online") != "store":
        data_cfg["caption_store"] = None
        return None
    from covr.data.extract import captions_from_csv, extract_caption_embeddings

    if not data_cfg.get("caption_store"):
        raise EmbeddingStoreError("data.caption_features=store needs data.caption_store (covr-extract-embeddings --captions writes one)")
    identity = model.text_identity
    texts = captions_from_csv(data_cfg["train"]["csv"], int(data_cfg.get("max_words", 30)))
    path = Path(data_cfg["caption_store"])
    if data_cfg.get("extract_caption_store"):
        path = path / identity
        with file_lock(path.parent / f".{identity}.lock"):
            if not (path / "meta.json").is_file() or EmbeddingStore.open(path, identity, "text").missing_ids():
                log.info("extracting caption features of %d target captions into %s", len(texts), path)
                extract_caption_embeddings(model, texts, path, dtype="float32", device=next(model.parameters()).device, progress=False)
    store = EmbeddingStore.open(path, identity, "text")
    done = set(store.ids[i] for i in np.flatnonzero(store.done_mask()))
    missing = [t for t in texts if t not in done]
    if missing:
        raise EmbeddingStoreError(
            f"text store {path} lacks {len(missing):,} of the {len(texts):,} train captions (e.g. {missing[0]!r}); "
            "write them with covr-extract-embeddings --captions, or use data.caption_features=online"
        )
    data_cfg["caption_store"], data_cfg["caption_store_identity"] = str(path), identity
    return identity
