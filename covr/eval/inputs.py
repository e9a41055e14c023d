"""What the evaluator feeds the model: query texts cleaned by the benchmark's rule, query frames as
the checkpoint was trained, and the gallery from an embedding store, the cache or the encoder."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from covr.data.embedding_store import EmbeddingStore
from covr.eval.captions import query_captions
from covr.eval.datasets.base import Benchmark, Query, RetrievalTask
from covr.eval.encoding import FrameOptions, ItemEmbeddings, gallery_from_store
from covr.eval.frames import PREPROCESSING
from covr.eval.gallery_cache import cached_gallery
from covr.eval.fusion_inputs import Encoders
from covr.eval.protocols import ScoringProtocol
from covr.eval.rerank import build_rescorer
from covr.eval.texts import cleaner, word_count


@dataclass
class RunSettings:
    """Settings shared by every task of a run."""

    device: torch.device
    similarity: str | None  # overrides every protocol's similarity mode when set
    batch_size: int
    num_workers: int
    cache_dir: Path | None
    backend: str
    dtype: torch.dtype
    save_rankings: bool = False
    save_embeddings: bool = False
    override_prefix: str = "benchmark"  # where the benchmark configs live in the Hydra config (test.py)
    report: bool = False  # a visual report per benchmark (covr.eval.visual_report)
    report_queries: int = 24  # queries sampled per task
    report_top_k: int = 5  # results shown per query


def query_frame_options(retriever: nn.Module, cfg: Mapping[str, Any], run: RunSettings) -> tuple[FrameOptions, str]:
    """Query frames: the config's, else those the checkpoint was trained with, else CoVR's middle frame."""
    trained = getattr(retriever, "query_frames", None) or {}
    count = int(cfg.get("query_frames") or trained.get("num_frames") or 1)
    strategy = cfg.get("query_frame_strategy") or trained.get("strategy") or ("middle" if count == 1 else "uniform")
    strategy = "uniform" if strategy == "random" else strategy  # evaluation is deterministic: segment middles
    source = "config" if cfg.get("query_frames") or cfg.get("query_frame_strategy") else "checkpoint" if trained else "default"
    return FrameOptions(int(retriever.image_size), count, strategy, run.batch_size, run.num_workers), source


def prepared_queries(task: RetrievalTask, cfg: Mapping[str, Any], rule: str) -> tuple[list[Query], list[str] | None, int]:
    """The task's queries with texts (and captions) cleaned by `rule` (covr.eval.texts), unless
    switched off -> (queries, captions, how many query texts the word limit cut)."""
    captions = query_captions(task.queries, cfg.get("caption_file"))
    if not cfg.get("clean_text", True):
        return list(task.queries), captions, 0
    clean, words = cleaner(rule), int(cfg.get("max_words", 30))
    cut = sum(word_count(rule, q.text) > words for q in task.queries) if words >= 0 else 0
    queries = [dataclasses.replace(q, text=clean(q.text, words)) for q in task.queries]
    return queries, [clean(c, words) for c in captions] if captions is not None else None, cut


def gallery_embeddings(
    retriever: nn.Module, benchmark: Benchmark, task: RetrievalTask, keep: list[int], cfg: Mapping[str, Any], run: RunSettings,
    protocol: ScoringProtocol, level: str,
) -> ItemEmbeddings:
    """The task's gallery (items at positions `keep`) at `level`, from the store, the cache or the encoder."""
    ids = [task.gallery.ids[i] for i in keep]
    renormalise = protocol.renormalise and level != "frames"
    if cfg.get("target_store"):
        identity = cfg.get("target_store_identity") or str(getattr(retriever, "target_identity", None) or retriever.identity)
        store = EmbeddingStore.open(cfg["target_store"], identity, kind="video")
        tokens = getattr(getattr(retriever, "backbone", None), "num_query_tokens", 1)
        if protocol.renormalise and len(store.frame_shape) == 1 and tokens > 1:
            raise ValueError(
                f"protocol {protocol.name!r} re-normalises every target token, but store {store.path} holds token means "
                f"[F, {store.frame_shape[0]}]: use a token store ([F, {tokens}, E], e.g. CoVR's released files) or protocol=covr"
            )
        return gallery_from_store(store, ids, level, renormalise, run.dtype)
    paths = [task.gallery.paths[i] for i in keep]
    frames = FrameOptions(
        int(retriever.image_size), int(cfg.get("target_frames", benchmark.num_frames)), cfg.get("target_frame_strategy", "uniform"),
        run.batch_size, run.num_workers,
    )  # fmt: skip
    # the gallery depends only on the target path: models sharing it (training stages) share a cache
    identity = getattr(retriever, "target_identity", None) or retriever.identity
    key = {
        "identity": str(identity), "dtype": str(run.dtype), "image_size": frames.image_size, "num_frames": frames.num_frames,
        "strategy": frames.strategy, "preprocessing": PREPROCESSING, "level": level, "renormalise": renormalise,
    }  # fmt: skip
    return cached_gallery(retriever, ids, paths, frames, level, renormalise, run.device, run.dtype, run.cache_dir, key, benchmark.name)


def task_rescorer(
    retriever: nn.Module, cfg: Mapping[str, Any], run: RunSettings, rule: str, queries: list[Query], query_tokens: Tensor,
    items: list[str], column_embeddings: Tensor, similarity: str = "mean",
) -> tuple[Any, dict[str, Any] | None]:
    """The task's re-scorer (SoFT, a score fusion, or None) and its record; artifact texts and
    constraints are cleaned as the query texts are."""
    if not cfg.get("rerank") and not cfg.get("fusion"):
        return None, None
    if similarity == "uncertainty":  # HUG's Gaussian distance: lower is better, and the gallery carries its variance row
        raise ValueError("rerank / fusion re-score a similarity (higher is better); similarity 'uncertainty' is a distance")
    words, rule_clean = int(cfg.get("max_words", 30)), cleaner(rule)
    clean = (lambda text: rule_clean(text, words)) if cfg.get("clean_text", True) else str
    encoders = Encoders(retriever, run.device, run.batch_size, run.num_workers, clean, int(query_tokens.shape[-1]))
    return build_rescorer(cfg, encoders, queries, query_tokens, items, column_embeddings)
