"""Run several benchmarks in one process, print one table, write results.json."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from covr.eval.evaluator import evaluate_benchmark


def format_results_table(results: Sequence[Mapping[str, Any]]) -> str:
    """One row per benchmark: split, counts, then every headline metric (percent, 2 decimals)."""
    header = ("benchmark", "split", "queries", "gallery", "skipped", "dropped", "metrics")
    rows = []
    for r in results:
        counts = r.get("counts", {})
        metrics = "  ".join(f"{k} {v:.2f}" for k, v in r.get("metrics", {}).items()) or "(test split: see submissions)"
        rows.append((
            str(r["benchmark"]), str(r["split"]), str(counts.get("queries", "")), str(counts.get("gallery", "")),
            str(counts.get("gallery_skipped", "")), str(counts.get("queries_dropped", "")), metrics,
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return "\n".join(lines)


def evaluate_benchmarks(
    retriever: nn.Module,
    benchmarks: Mapping[str, Mapping[str, Any]],
    out_dir: str | Path,
    **options: Any,
) -> dict[str, dict[str, Any]]:
    """Evaluate every {name: benchmark config}; write out_dir/results.json; print the table.

    options are `evaluate_benchmark`'s (batch_size, num_workers, mode, cache_dir, device, ...);
    a config without "reader" uses its name as the reader.
    """
    out_dir = Path(out_dir)
    results = {}
    for name, cfg in benchmarks.items():
        results[name] = evaluate_benchmark(retriever, {"name": name, **cfg}, out_dir, **options)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(format_results_table(list(results.values())))
    return results
