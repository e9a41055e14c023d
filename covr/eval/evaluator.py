"""One evaluator for every benchmark: read, encode (gallery cached), rank, score, submit.

Called by `test.py` with plain dicts (no Hydra here):

    results = evaluate_benchmark(retriever, {"reader": "cirr", "root": "/data/CIRR", "split": "val"},
                                 out_dir, batch_size=64, num_workers=8, mode="mean", cache_dir=...)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from covr.eval import metrics as M
from covr.eval.captions import query_captions
from covr.eval.datasets import load_benchmark
from covr.eval.datasets.base import Benchmark, Protocol, Query, RetrievalTask
from covr.eval.encoding import FrameOptions, GalleryEmbeddings, cached_gallery, check_references, encode_queries
from covr.eval.frames import PREPROCESSING
from covr.eval.submission import write_submission
from covr.eval.topk import rank_candidates, topk_faiss, topk_similarity
from covr.models.similarity import SimilarityMode

# Per-benchmark options read by the evaluator; every other key of a benchmark config goes to its reader.
EVALUATOR_OPTIONS = (
    "caption_file",  # JSON / JSONL {reference id: caption} for the query images
    "drop_missing_references",  # drop (and count) queries whose reference is unreadable instead of failing
    "query_frames", "query_frame_strategy",  # default 1, "middle": CoVR's reference frame
    "target_frames", "target_frame_strategy",  # default the reader's (15 for WebVid-CoVR), "uniform"
)  # fmt: skip
EVALUATOR_KEYS = ("name", "reader") + EVALUATOR_OPTIONS
MAX_LISTED = 20  # skipped / dropped files listed by name in the results
Rankings = list[list[str]]


@dataclass
class RunSettings:
    """Settings shared by every task of a run."""

    device: torch.device
    mode: SimilarityMode
    batch_size: int
    num_workers: int
    cache_dir: Path | None
    backend: str
    dtype: torch.dtype


def task_metrics(
    protocol: Protocol, queries: Sequence[Query], ranked: Rankings, subset_ranked: Rankings | None
) -> dict[str, float]:
    """Every metric of `protocol` over these queries (same order as the rankings)."""
    out: dict[str, float] = {}
    targets = [q.target for q in queries]
    for k in protocol.recall_ks:
        out[f"R@{k}"] = M.recall_at_k(ranked, targets, k)
    subsets, references = [q.subset for q in queries], [q.reference for q in queries]
    for k in protocol.subset_ks:
        out[f"Rs@{k}"] = M.recall_subset_at_k(subset_ranked, targets, subsets, references, k)
    for k in protocol.map_ks:
        out[f"mAP@{k}"] = M.map_at_k(ranked, [q.correct() for q in queries], k)
    return out


def category_breakdown(
    protocol: Protocol, queries: Sequence[Query], ranked: Rankings, subset_ranked: Rankings | None
) -> dict[str, dict[str, dict[str, float]]]:
    """{field: {value: metrics}} for every category field any query carries."""

    def compute(rows: list[int]) -> dict[str, float]:
        subset = [subset_ranked[i] for i in rows] if subset_ranked is not None else None
        return task_metrics(protocol, [queries[i] for i in rows], [ranked[i] for i in rows], subset)

    fields = sorted({f for q in queries for f in q.categories})
    return {f: M.breakdown([q.categories.get(f) for q in queries], compute) for f in fields}


def rank_task(
    queries: Sequence[Query], query_emb: torch.Tensor, gallery: GalleryEmbeddings, k: int, run: RunSettings, subsets: bool
) -> tuple[Rankings, Rankings | None]:
    """Top-k gallery ids per query (its `exclude` ids masked) and, for CIRR, each subset's ranking."""
    index_of = {image: i for i, image in enumerate(gallery.ids)}
    exclude = [[index_of[x] for x in q.exclude if x in index_of] for q in queries]
    if run.backend == "exact":
        _, indices = topk_similarity(query_emb, gallery.embeddings, k, run.mode, exclude)
    elif run.backend.split(":")[0] == "faiss":  # "faiss" = exact flat, "faiss:IVF4096,Flat" = approximate
        if run.mode != "mean":
            raise ValueError("the faiss backend supports similarity mode 'mean' only")
        factory = run.backend.partition(":")[2] or "Flat"
        _, indices = topk_faiss(query_emb, gallery.embeddings, k, exclude, index_factory=factory)
    else:
        raise ValueError(f"unknown top-k backend {run.backend!r}; expected 'exact', 'faiss' or 'faiss:<index factory>'")
    ranked = [[gallery.ids[i] for i in row if i >= 0] for row in indices.tolist()]
    if not subsets:
        return ranked, None
    members = [[index_of[m] for m in (q.subset or ()) if m in index_of and m != q.reference] for q in queries]
    subset_order = rank_candidates(query_emb, gallery.embeddings, members, run.mode)
    return ranked, [[gallery.ids[i] for i in row] for row in subset_order]


def _listed(pairs: list[tuple[str, str]]) -> list[str]:
    return [f"{name}: {reason}" for name, reason in pairs[:MAX_LISTED]]


def _frame_options(retriever: nn.Module, benchmark: Benchmark, cfg: Mapping[str, Any], run: RunSettings):
    size, loader = int(retriever.image_size), {"batch_size": run.batch_size, "num_workers": run.num_workers}
    query = FrameOptions(size, int(cfg.get("query_frames", 1)), cfg.get("query_frame_strategy", "middle"), **loader)
    num_target = int(cfg.get("target_frames", benchmark.num_frames))
    target = FrameOptions(size, num_target, cfg.get("target_frame_strategy", "uniform"), **loader)
    return query, target


def evaluate_task(
    retriever: nn.Module, benchmark: Benchmark, task: RetrievalTask, cfg: Mapping[str, Any], run: RunSettings
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Encode, rank and score one task -> (results: metrics, breakdown, counts; rankings by query id)."""
    drop = bool(cfg.get("drop_missing_references", False))
    query_frames, target_frames = _frame_options(retriever, benchmark, cfg, run)
    queries, dropped = check_references(task.queries, drop)  # fail fast, before the gallery
    captions = query_captions(queries, cfg.get("caption_file"))
    caption_of = dict(zip([q.id for q in queries], captions)) if captions is not None else None

    # the gallery depends only on the target path: models sharing it (training stages) share a cache
    identity = getattr(retriever, "target_identity", None) or retriever.identity
    key = {
        "identity": str(identity), "benchmark": benchmark.name, "task": task.name, "mode": run.mode, "dtype": str(run.dtype),
        "image_size": target_frames.image_size, "num_frames": target_frames.num_frames, "strategy": target_frames.strategy,
        "preprocessing": PREPROCESSING,
    }  # fmt: skip
    gallery = cached_gallery(
        retriever, task.gallery.ids, task.gallery.paths, target_frames, run.mode, run.device, run.dtype, run.cache_dir,
        key, task.name,
    )  # fmt: skip
    kept, query_emb, unreadable = encode_queries(
        retriever, queries, [caption_of[q.id] for q in queries] if caption_of else None, query_frames, run.device, drop
    )
    dropped += unreadable

    protocol = benchmark.protocol
    k = max(protocol.recall_ks + protocol.map_ks + ((protocol.submission_k,) if benchmark.submission else ()))
    ranked, subset_ranked = rank_task(kept, query_emb, gallery, k, run, bool(protocol.subset_ks))
    present = set(gallery.ids)
    result: dict[str, Any] = {
        "counts": {
            "queries": len(kept),
            "queries_dropped": len(dropped),
            "gallery": len(gallery.ids),
            "gallery_skipped": len(gallery.skipped),
            "targets_not_in_gallery": sum(q.target is not None and q.target not in present for q in kept),
        },
        "gallery_cache": gallery.cache,
        "skipped_gallery_files": _listed(gallery.skipped),
        "dropped_queries": _listed(dropped),
    }
    if benchmark.has_labels:
        result["metrics"] = task_metrics(protocol, kept, ranked, subset_ranked)
        breakdown = category_breakdown(protocol, kept, ranked, subset_ranked)
        if breakdown:
            result["by_category"] = breakdown
    ids = [q.id for q in kept]
    subset_by_id = dict(zip(ids, subset_ranked)) if subset_ranked is not None else None
    return result, {"ranked": dict(zip(ids, ranked)), "subset_ranked": subset_by_id}


def _plain(value: Any) -> Any:
    """JSON-friendly option value (paths as strings)."""
    return str(value) if isinstance(value, Path) else value


def evaluate_benchmark(
    retriever: nn.Module,
    benchmark_cfg: Mapping[str, Any],
    out_dir: str | Path,
    batch_size: int = 32,
    num_workers: int = 4,
    mode: SimilarityMode = "mean",
    cache_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    backend: str = "exact",
    embedding_dtype: torch.dtype = torch.float32,
    save_rankings: bool = False,
) -> dict[str, Any]:
    """Evaluate `retriever` on one benchmark; write submission files for test-server splits.

    benchmark_cfg: {"reader": "cirr" | "fashioniq" | "circo" | "webvid_covr" | "cir_jsonl",
                    "name": display name (default: the reader), the reader's options (root,
                    split, ...), and any of EVALUATOR_OPTIONS}
    mode: "mean" (pooled gallery) or "max" (token gallery, max over tokens)
    cache_dir: where gallery embeddings are cached (None: no cache)
    backend: "exact" (chunked top-K), "faiss" (exact IndexFlatIP) or "faiss:<index factory>"
    embedding_dtype: gallery storage / cache dtype (float16 halves a token gallery's memory)
    save_rankings: also write rankings_<name>_<split>.json ({task: {"ranked": {query id: ids}, ...}})
    returns {"benchmark", "split", "metrics" (headline), "tasks", "counts", "options", "submissions"}
    """
    cfg = dict(benchmark_cfg)
    reader = cfg.get("reader", cfg.get("name"))
    if reader is None:
        raise ValueError(f"benchmark config needs a 'reader' (or 'name'): {cfg}")
    benchmark = load_benchmark(reader, {k: v for k, v in cfg.items() if k not in EVALUATOR_KEYS}, cfg.get("name"))
    if device is None:
        device = next((p.device for p in retriever.parameters()), torch.device("cpu"))
    cache = Path(cache_dir) if cache_dir is not None else None
    run = RunSettings(torch.device(device), mode, batch_size, num_workers, cache, backend, embedding_dtype)

    was_training = retriever.training
    retriever.eval()
    try:
        with torch.inference_mode():
            outputs = {task.name: evaluate_task(retriever, benchmark, task, cfg, run) for task in benchmark.tasks}
    finally:
        retriever.train(was_training)
    tasks = {task_name: result for task_name, (result, _) in outputs.items()}
    rankings = {task_name: ranks for task_name, (_, ranks) in outputs.items()}

    name, out_dir = cfg.get("name", benchmark.name), Path(out_dir)
    submissions: list[str] = []
    for task in benchmark.tasks if benchmark.submission else ():
        ranks = rankings[task.name]
        written = write_submission(
            benchmark.submission, out_dir, task.queries, ranks["ranked"], ranks["subset_ranked"], task.gallery.ids,
            benchmark.protocol.submission_k,
        )  # fmt: skip
        submissions += [str(p) for p in written]
    if save_rankings:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"rankings_{name}_{benchmark.split}.json").write_text(json.dumps(rankings), encoding="utf-8")

    counts = {key: sum(t["counts"][key] for t in tasks.values()) for key in next(iter(tasks.values()))["counts"]}
    options = {**benchmark.options, "similarity_mode": mode, "backend": backend}
    options["embedding_dtype"] = str(embedding_dtype).removeprefix("torch.")
    options.update({k: _plain(cfg[k]) for k in EVALUATOR_OPTIONS if k in cfg})
    headline = benchmark.summarise({n: t.get("metrics", {}) for n, t in tasks.items()}) if benchmark.has_labels else {}
    results = {
        "benchmark": name,
        "split": benchmark.split,
        "metrics": headline,
        "tasks": tasks,
        "counts": counts,
        "options": options,
        "submissions": submissions,
    }
    if len(tasks) == 1 and "by_category" in next(iter(tasks.values())):
        results["by_category"] = next(iter(tasks.values()))["by_category"]
    return results
