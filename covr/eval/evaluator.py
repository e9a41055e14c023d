"""One evaluator for every benchmark: read, check files, clean text, encode (gallery cached), score
under the benchmark's protocol, dump, submit.

Called by `test.py` with plain dicts (no Hydra here):

    results = evaluate_benchmark(retriever, {"reader": "cirr", "root": "/data/CIRR", "split": "val"},
                                 out_dir, batch_size=64, num_workers=8, cache_dir=...)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from covr.data.errors import MissingVideosError
from covr.data.video import IMAGE_SUFFIXES
from covr.eval.chance import candidate_counts, chance_recall
from covr.eval.checks import check_task_files, drop_or_fail, unanswerable
from covr.eval.datasets import load_benchmark
from covr.eval.datasets.base import Benchmark, Query, RetrievalTask
from covr.eval.dumps import task_folder, write_embeddings, write_rankings
from covr.eval.encoding import encode_queries
from covr.eval.inputs import RunSettings, gallery_embeddings, prepared_queries, query_frame_options, task_rescorer
from covr.eval.protocols import ScoringProtocol, gallery_level, resolve_protocol
from covr.eval.report_entries import sample_entries
from covr.eval.scoring import build_columns, candidate_columns, category_breakdown, rank_task, task_metrics
from covr.eval.submission import write_submission
from covr.similarity import with_variance
from covr.eval.visual_report import write_report

# Per-benchmark options read by the evaluator; every other key of a benchmark config goes to its reader.
EVALUATOR_OPTIONS = (
    "protocol",  # covr.eval.protocols name; null = the reader's default (the published code's protocol)
    "caption_file",  # JSON / JSONL {reference id: caption} for the query images
    "allow_missing",  # drop (and count) queries whose reference / target is missing or unreadable instead of failing
    "clean_text", "max_words",  # cleaning of every query text and caption by the benchmark's rule (default true, 30 words)
    "query_frames", "query_frame_strategy",  # default: what the checkpoint was trained with, else 1 middle frame
    "target_frames", "target_frame_strategy",  # default the reader's (15 for videos), "uniform"
    "target_store", "target_store_identity",  # gallery embeddings from an EmbeddingStore (e.g. imported CoVR ones)
    "rerank", "constraint_file", "soft_lambda",  # SoFT re-ranking of the whole gallery (covr.eval.rerank)
    "fusion",  # score fusion over precomputed artifacts: {method: paracosm | xr | cvsi, ...} (covr.eval.rerank)
)  # fmt: skip
EVALUATOR_KEYS = ("name", "reader") + EVALUATOR_OPTIONS
RENAMED = {"drop_missing_references": "allow_missing"}
MAX_LISTED = 20  # skipped / dropped files listed by name in the results


def _listed(pairs: Sequence[tuple[str, str]]) -> list[str]:
    return [f"{name}: {reason}" for name, reason in list(pairs)[:MAX_LISTED]]


def _rows(encoded: Sequence[Query], kept: Sequence[Query], tokens: torch.Tensor) -> torch.Tensor:
    """The rows of `tokens` (one per encoded query) of the kept queries."""
    if len(kept) == len(encoded):
        return tokens
    kept_ids = {q.id for q in kept}
    rows = torch.tensor([i for i, q in enumerate(encoded) if q.id in kept_ids], dtype=torch.long)
    return tokens[rows.to(tokens.device)]


def evaluate_task(
    retriever: nn.Module, benchmark: Benchmark, task: RetrievalTask, cfg: Mapping[str, Any], run: RunSettings, protocol: ScoringProtocol, out_dir: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check, encode, rank and score one task -> (results, rankings {"ranked", "subset_ranked"} by query id)."""
    allow = bool(cfg.get("allow_missing", False))
    override = f"{run.override_prefix}.{cfg.get('name', benchmark.name)}.allow_missing=true"
    queries, captions, texts_cut = prepared_queries(task, cfg, benchmark.text_rule)
    caption_of = dict(zip([q.id for q in queries], captions)) if captions is not None else None
    store = bool(cfg.get("target_store"))
    gallery_paths = [] if store else task.gallery.paths  # a store replaces the files: ids are checked against it below
    queries, dropped, bad_items = check_task_files(queries, task.gallery.ids[: len(gallery_paths)], gallery_paths, allow, task.name, override)
    keep = [i for i, item in enumerate(task.gallery.ids) if item not in bad_items]

    query_frames, query_frame_source = query_frame_options(retriever, cfg, run)
    encoded, query_tokens, failed = encode_queries(
        retriever, queries, [caption_of[q.id] for q in queries] if caption_of else None, query_frames, run.device
    )
    drop_or_fail(queries, failed, allow, task.name, override)  # raises for a reference that opened but did not decode
    dropped += failed
    level = gallery_level(protocol, run.save_embeddings)
    gallery = gallery_embeddings(retriever, benchmark, task, keep, cfg, run, protocol, level)
    skipped = [(i, r) for i, r in bad_items.items()] + gallery.skipped
    late = unanswerable(encoded, {}, dict(gallery.skipped))  # targets that opened but did not decode, or are not in the store
    kept = drop_or_fail(encoded, late, allow, task.name, override)
    dropped += late
    if not kept:
        raise MissingVideosError(f"{task.name}: no query can be scored ({len(dropped)} dropped, e.g. {dropped[0][1] if dropped else 'no queries'})")

    spec = benchmark.protocol
    columns = build_columns(protocol, kept, gallery, task.listing)
    if protocol.similarity == "uncertainty":  # HUG: every column carries its variance under the model's uncertainty heads
        columns.embeddings = with_variance(columns.embeddings, retriever.target_variance, device=run.device)
        if protocol.mask == "set" and protocol.mask_value is not None:  # -distance is unbounded below: a fixed score
            protocol = replace(protocol, mask_value=None)  # would rank excluded items above far ones; they are removed
    candidates = candidate_columns(protocol, kept, columns, task.listing)
    counts = candidate_counts(protocol, spec, kept, columns, candidates)
    # the benchmark's own rule (EgoCVR: a query whose gallery has fewer than 2 entries is not scored)
    small = {q.id: c for q, (c, _) in zip(kept, counts) if c < spec.min_candidates}
    unscored = [(q, f"{small[q.id]} gallery entries (fewer than {spec.min_candidates})") for q in kept if q.id in small]
    if small:
        rows = [i for i, q in enumerate(kept) if q.id not in small]
        kept, counts = [kept[i] for i in rows], [counts[i] for i in rows]
        candidates = [candidates[i] for i in rows] if candidates is not None else None
    if not kept:
        raise MissingVideosError(f"{task.name}: no query can be scored ({len(unscored)} have fewer than {spec.min_candidates} gallery entries)")
    query_tokens = _rows(encoded, kept, query_tokens)
    rescore, rescoring = task_rescorer(
        retriever, cfg, run, benchmark.text_rule, kept, query_tokens, columns.items, columns.embeddings, protocol.similarity
    )
    k = max(spec.recall_ks + spec.map_ks + ((spec.submission_k,) if benchmark.submission else ()))
    ranking = rank_task(protocol, kept, query_tokens, columns, k, bool(spec.subset_ks), run.backend, candidates, rescore)
    present = set(gallery.ids)
    result: dict[str, Any] = {
        "counts": {
            "queries": len(kept),
            "queries_dropped": len(dropped),
            "queries_unscored": len(unscored),
            "gallery": len(gallery.ids),
            "gallery_entries": len(columns.ids),
            "gallery_skipped": len(skipped),
            "targets_not_in_gallery": sum(q.target is not None and q.target not in present for q in kept),
            "texts_cut": texts_cut,
        },
        "media": "images" if all(Path(p).suffix.lower() in IMAGE_SUFFIXES for p in task.gallery.paths) else "videos",
        "chance": chance_recall(protocol, spec, counts, spec.recall_ks),
        "candidates_per_query": sum(c for c, _ in counts) / len(counts) if candidates is not None else None,
        "gallery_cache": gallery.cache,
        "query_frames": {"num_frames": query_frames.num_frames, "strategy": query_frames.strategy, "from": query_frame_source},
        "skipped_gallery_files": _listed(skipped),
        "dropped_queries": _listed(dropped),
        "unscored_queries": _listed([(q.id, reason) for q, reason in unscored]),
    }
    if rescoring:
        result["rescoring"] = rescoring
    item_of = dict(zip(columns.ids, columns.items))
    if benchmark.has_labels:
        result["metrics"] = task_metrics(spec, protocol, kept, ranking.ranked, ranking.subset_ranked, item_of)
        breakdown = category_breakdown(spec, protocol, kept, ranking.ranked, ranking.subset_ranked, item_of)
        if breakdown:
            result["by_category"] = breakdown
    if run.save_rankings or run.save_embeddings:
        folder = task_folder(out_dir, task.name)
        result["dumps"] = []
        if run.save_rankings:
            result["dumps"].append(str(write_rankings(folder / "rankings.jsonl", kept, ranking)))
        if run.save_embeddings:
            result["dumps"].append(str(write_embeddings(folder / "embeddings.npz", kept, query_tokens, gallery, result["media"] == "videos")))
    ids = [q.id for q in kept]
    ranked = {q.id: [item_of[c] for c in row if item_of[c] not in q.exclude] for q, row in zip(kept, ranking.ranked)}
    subset_by_id = dict(zip(ids, ranking.subset_ranked)) if ranking.subset_ranked is not None else None
    shown = None
    if run.report:  # the ranking as scored (a masked reference included), with the files to show
        items = [[item_of[c] for c in row] for row in ranking.ranked]
        paths = dict(zip(task.gallery.ids, task.gallery.paths))
        shown = sample_entries(kept, items, ranking.scores, paths, run.report_queries, run.report_top_k)
    return result, {"ranked": ranked, "subset_ranked": subset_by_id, "report": shown}


def _plain(value: Any) -> Any:
    """JSON-friendly option value (paths as strings)."""
    return str(value) if isinstance(value, Path) else value


def evaluate_benchmark(
    retriever: nn.Module,
    benchmark_cfg: Mapping[str, Any],
    out_dir: str | Path,
    batch_size: int = 32,
    num_workers: int = 4,
    similarity: str | None = None,
    cache_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    backend: str = "exact",
    embedding_dtype: torch.dtype = torch.float32,
    save_rankings: bool = False,
    save_embeddings: bool = False,
    override_prefix: str = "benchmark",
    rerank: str | None = None,
    soft_lambda: float | None = None,
    report: bool = False,
    report_queries: int = 24,
    report_top_k: int = 5,
) -> dict[str, Any]:
    """Evaluate `retriever` on one benchmark; write dumps and, for test-server splits, submissions.

    benchmark_cfg: {"reader": a key of covr.eval.datasets.READERS (webvid_covr, egocvr, tf_covr, cirr, ...),
                    "name": display name (default: the reader), the reader's options (root,
                    split, ...), and any of EVALUATOR_OPTIONS}
    similarity: None = the protocol's; "mean" / "max_target_token" / "max_token_pair" overrides it
    cache_dir: where gallery embeddings are cached (None: no cache)
    backend: "exact" (chunked top-K), "faiss" (exact IndexFlatIP) or "faiss:<index factory>"
    embedding_dtype: gallery storage / cache dtype (float16 halves a token gallery's memory)
    save_rankings / save_embeddings: per task, <out_dir>/<task>/rankings.jsonl / embeddings.npz (covr.eval.dumps)
    override_prefix: config path of the benchmark configs, for the override named by missing-file errors
    rerank / soft_lambda: SoFT for every benchmark whose config does not set its own (each needs a constraint_file)
    report / report_queries / report_top_k: write <out_dir>/report/<name>.html and .png (covr.eval.visual_report)
    returns {"benchmark", "split", "protocol", "metrics" (headline), "tasks", "counts", "options", "submissions"}
    """
    cfg = dict(benchmark_cfg)
    if rerank is not None and cfg.get("rerank") is None:
        cfg["rerank"] = rerank
    if soft_lambda is not None and cfg.get("soft_lambda") is None:
        cfg["soft_lambda"] = soft_lambda
    for old, new in RENAMED.items():
        if old in cfg:
            raise ValueError(f"benchmark option {old!r} is now {new!r} (the same switch as the datasets')")
    reader = cfg.get("reader", cfg.get("name"))
    if reader is None:
        raise ValueError(f"benchmark config needs a 'reader' (or 'name'): {cfg}")
    protocol = resolve_protocol(reader, cfg.get("protocol"), similarity)
    benchmark = load_benchmark(reader, {k: v for k, v in cfg.items() if k not in EVALUATOR_KEYS}, cfg.get("name"))
    if device is None:
        device = next((p.device for p in retriever.parameters()), torch.device("cpu"))
    cache = Path(cache_dir) if cache_dir is not None else None
    run = RunSettings(
        torch.device(device), similarity, batch_size, num_workers, cache, backend, embedding_dtype, save_rankings, save_embeddings, override_prefix,
        report, report_queries, report_top_k,
    )  # fmt: skip
    out_dir = Path(out_dir)
    was_training = retriever.training
    retriever.eval()
    try:
        with torch.inference_mode():
            outputs = {task.name: evaluate_task(retriever, benchmark, task, cfg, run, protocol, out_dir) for task in benchmark.tasks}
    finally:
        retriever.train(was_training)
    tasks = {task_name: result for task_name, (result, _) in outputs.items()}

    submissions: list[str] = []
    for task in benchmark.tasks if benchmark.submission else ():
        ranks = outputs[task.name][1]
        written = write_submission(
            benchmark.submission, out_dir, task.queries, ranks["ranked"], ranks["subset_ranked"], task.gallery.ids,
            benchmark.protocol.submission_k,
        )  # fmt: skip
        submissions += [str(p) for p in written]

    numeric = [key for key, v in next(iter(tasks.values()))["counts"].items() if isinstance(v, int)]
    counts = {key: sum(t["counts"][key] for t in tasks.values()) for key in numeric}
    options = {**benchmark.options, "similarity_mode": protocol.similarity, "backend": backend, "clean_text": bool(cfg.get("clean_text", True))}
    options.update(text_rule=benchmark.text_rule, max_words=int(cfg.get("max_words", 30)))
    options["target_frames"] = int(cfg.get("target_frames", benchmark.num_frames))
    options["embedding_dtype"] = str(embedding_dtype).removeprefix("torch.")
    options.update({k: _plain(cfg[k]) for k in EVALUATOR_OPTIONS if k in cfg})
    headline = benchmark.summarise({n: t.get("metrics", {}) for n, t in tasks.items()}) if benchmark.has_labels else {}
    results = {
        "benchmark": cfg.get("name", benchmark.name),
        "split": benchmark.split,
        "protocol": protocol.describe(),
        "metrics": headline,
        "tasks": tasks,
        "counts": counts,
        "options": options,
        "submissions": submissions,
    }
    if len(tasks) == 1 and "by_category" in next(iter(tasks.values())):
        results["by_category"] = next(iter(tasks.values()))["by_category"]
    rescoring = next((t["rescoring"] for t in tasks.values() if "rescoring" in t), None)
    if rescoring:  # e.g. "covr2+soft": the table and results.json say the scores were re-ranked
        results["rescoring"] = rescoring
        fusion = f"+{rescoring['fusion']['method']}" if "fusion" in rescoring else ""
        results["protocol"]["name"] += fusion + ("+soft" if "soft" in rescoring else "")
    if report:
        shown = {name: out[1]["report"] for name, out in outputs.items()}
        results["report"] = write_report(out_dir, str(results["benchmark"]), results, shown, report_top_k)
    return results
