"""Each query's candidates and the chance level of R@K (a random ranking of them).

A query's candidates are the columns it may rank (its own gallery list, else every column) minus
the columns of its excluded items: a masked entry ranks after every real one and a removed one not
at all, so neither is a candidate. Of C candidates, m count as correct (its own column for
"rows" protocols; the columns showing its target, or any correct item for EgoCVR's "any" recall).
Expected R@K of a random ranking, K' = min(K, C): a hit-at-most-once R@K is
1 - prod_{j<K'} (C - m - j) / (C - j); a counted R@K (TF-CoVR) is m K' / C.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covr.eval.datasets.base import Protocol, Query
from covr.eval.protocols import ScoringProtocol
from covr.eval.scoring import Columns


def _codes(columns: Columns) -> tuple[np.ndarray, dict[str, int]]:
    code: dict[str, int] = {}
    items = np.array([code.setdefault(item, len(code)) for item in columns.items], dtype=np.int64)
    return items, code


def candidate_counts(
    scoring: ScoringProtocol, metrics: Protocol, queries: Sequence[Query], columns: Columns, candidates: list[list[int]] | None
) -> list[tuple[int, int]]:
    """(candidates C, correct candidates m) per query (see the module docstring)."""
    items, code = _codes(columns)
    own = {key: c for c, key in enumerate(columns.ids)}
    everything = np.arange(len(columns.ids))
    out = []
    for i, q in enumerate(queries):
        cols = np.asarray(candidates[i], dtype=np.int64) if candidates is not None else everything
        excluded = [code[x] for x in set(q.exclude) if x in code]
        cols = cols[~np.isin(items[cols], excluded)] if excluded else cols
        if scoring.columns == "rows":
            m = int(own.get(q.id, -1) in set(cols.tolist()))
        else:
            correct = q.correct() if metrics.recall_of == "any" and scoring.hits != "count" else (q.target,)
            m = int(np.isin(items[cols], [code[x] for x in set(correct) if x in code]).sum())
        out.append((len(cols), m))
    return out


def expected_recall(candidates: int, correct: int, k: int, counted: bool) -> float:
    """Expected R@k (a fraction, or a count for `counted`) of a random ranking (module docstring)."""
    if candidates <= 0 or correct <= 0:
        return 0.0
    top = min(k, candidates)
    if counted:
        return correct * top / candidates
    miss = 1.0
    for j in range(top):
        miss *= max(candidates - correct - j, 0) / (candidates - j)
    return 1.0 - miss


def chance_recall(
    scoring: ScoringProtocol, metrics: Protocol, counts: Sequence[tuple[int, int]], ks: Sequence[int]
) -> dict[str, float]:
    """Expected R@K (percent) of a random ranking of each query's candidates, averaged over queries."""
    out = {}
    for k in ks:
        total = sum(expected_recall(c, m, k, scoring.hits == "count") for c, m in counts)
        out[f"R@{k}"] = 100.0 * total / len(counts) if counts else float("nan")
    return out
