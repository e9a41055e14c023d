"""Run several benchmarks in one process, print one table, write results.json."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from covr.eval.evaluator import evaluate_benchmark

HEADER = ("benchmark", "split", "protocol", "queries", "gallery", "chance", "skipped", "dropped", "unscored", "metrics")


def _chance_k(metrics: Mapping[str, float]) -> int:
    """The smallest K of the headline's R@K (FashionIQ reports R@10 first), 1 without metrics."""
    ks = [int(m.group(1)) for key in metrics if (m := re.fullmatch(r"(?:.*/)?R@(\d+)", key))]
    return min(ks) if ks else 1


def _row(name: str, split: str, protocol: str, task: Mapping[str, Any], k: int, metrics: str) -> tuple[str, ...]:
    counts, chance = task.get("counts", {}), task.get("chance", {}).get(f"R@{k}")
    gallery = f"{counts.get('gallery', '')} {task.get('media', '')}".strip()
    if counts.get("gallery_entries", counts.get("gallery")) != counts.get("gallery"):  # a list that repeats items
        gallery += f" ({counts['gallery_entries']} entries)"
    if task.get("candidates_per_query") is not None:  # per-query galleries (EgoCVR)
        gallery += f" ({task['candidates_per_query']:.1f}/query)"
    return (
        name, split, protocol, str(counts.get("queries", "")), gallery, f"R@{k} {chance:.2f}" if chance is not None else "",
        str(counts.get("gallery_skipped", "")), str(counts.get("queries_dropped", "")), str(counts.get("queries_unscored", "")), metrics,
    )  # fmt: skip


def format_results_table(results: Sequence[Mapping[str, Any]]) -> str:
    """One row per benchmark (and one per task when it has several, e.g. FashionIQ's categories):
    protocol, counts, gallery size with images / videos (and its entries when the benchmark's list
    repeats items, its mean size per query when each query has its own), the chance level of the
    first headline R@K (a random ranking; the masked reference is not a candidate), skipped gallery
    files, dropped and unscored queries, then every metric in percent."""
    rows = []
    for r in results:
        headline = r.get("metrics", {})
        metrics = "  ".join(f"{k} {v:.2f}" for k, v in headline.items()) or "(test split: see submissions)"
        k, tasks = _chance_k(headline), list(r.get("tasks", {}).items())
        protocol = (r.get("protocol") or {}).get("name", "")
        if len(tasks) == 1:
            rows.append(_row(str(r["benchmark"]), str(r["split"]), protocol, tasks[0][1], k, metrics))
            continue
        media = {t.get("media") for _, t in tasks}
        total = {"counts": r.get("counts", {}), "media": media.pop() if len(media) == 1 else ""}
        rows.append(_row(str(r["benchmark"]), str(r["split"]), protocol, total, k, metrics))
        for task_name, task in tasks:
            task_metrics = "  ".join(f"{key} {v:.2f}" for key, v in task.get("metrics", {}).items() if key.startswith("R@"))
            rows.append(_row("  " + task_name.rsplit("/", 1)[-1], "", "", task, k, task_metrics))
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in [HEADER, *rows])


def evaluate_benchmarks(
    retriever: nn.Module,
    benchmarks: Mapping[str, Mapping[str, Any]],
    out_dir: str | Path,
    **options: Any,
) -> dict[str, dict[str, Any]]:
    """Evaluate every {name: benchmark config}; write out_dir/results.json; print the table.

    options are `evaluate_benchmark`'s (batch_size, num_workers, similarity, cache_dir, device,
    save_rankings, save_embeddings, override_prefix, ...); a config without "reader" uses its name.
    """
    out_dir = Path(out_dir)
    results = {}
    for name, cfg in benchmarks.items():
        results[name] = evaluate_benchmark(retriever, {"name": name, **cfg}, out_dir, **options)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(format_results_table(list(results.values())))
    return results
