"""Test-server submission files for CIRR test1 and CIRCO test, validated before they are written.

CIRR: two JSON files, {"version": "rc2", "metric": "recall", "<pairid>": [50 names]} and
{"version": "rc2", "metric": "recall_subset", "<pairid>": [3 names]}; names without extension,
every pair present, the reference never listed, each file <= 5 MB.
CIRCO: one JSON {"<query id>": [50 integer image ids]}, no version field.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from covr.eval.datasets.base import Query
from covr.data.video import IMAGE_SUFFIXES

MAX_BYTES = 5 * 1024 * 1024


class SubmissionError(ValueError):
    """A submission file breaks the test server's format rules."""


def _check_list(where: str, items: Sequence, length: int, reference, allowed: Collection | None) -> None:
    if not isinstance(items, list) or len(items) != length:
        got = len(items) if isinstance(items, list) else type(items).__name__
        raise SubmissionError(f"{where}: expected a list of exactly {length} ids, got {got}")
    if len(set(items)) != len(items):
        dup = next(x for i, x in enumerate(items) if x in items[:i])
        raise SubmissionError(f"{where}: id {dup!r} listed twice")
    if reference in items:
        raise SubmissionError(f"{where}: the reference {reference!r} is listed")
    if allowed is not None:
        unknown = [x for x in items if x not in allowed]
        if unknown:
            raise SubmissionError(f"{where}: {unknown[0]!r} is not an allowed id")


def _check_keys(where: str, got: Collection[str], queries: Sequence[Query]) -> None:
    expected = {q.id for q in queries}
    missing, extra = expected - set(got), set(got) - expected
    if missing:
        raise SubmissionError(f"{where}: {len(missing)} queries missing, e.g. {sorted(missing)[0]!r}")
    if extra:
        raise SubmissionError(f"{where}: unknown query id {sorted(extra)[0]!r}")


def validate_cirr(
    recall: Mapping,
    recall_subset: Mapping,
    queries: Sequence[Query],
    k: int = 50,
    gallery_ids: Collection[str] | None = None,
) -> None:
    """Raise SubmissionError unless both CIRR files follow the rules for these (all test1) queries."""
    for name, obj, metric in (("recall", recall, "recall"), ("recall_subset", recall_subset, "recall_subset")):
        if obj.get("version") != "rc2" or obj.get("metric") != metric:
            raise SubmissionError(f"CIRR {name}: needs \"version\": \"rc2\" and \"metric\": \"{metric}\"")
        _check_keys(f"CIRR {name}", [key for key in obj if key not in ("version", "metric")], queries)
    for q in queries:
        for name, obj, length, allowed in (
            ("recall", recall, k, gallery_ids),
            ("recall_subset", recall_subset, min(3, len(set(q.subset or ()) - {q.reference})), set(q.subset or ())),
        ):
            items = obj[q.id]
            for item in items if isinstance(items, list) else ():
                if not isinstance(item, str) or "/" in item or Path(item).suffix.lower() in IMAGE_SUFFIXES:
                    raise SubmissionError(f"CIRR {name} pair {q.id}: {item!r} is not an image name without extension")
            _check_list(f"CIRR {name} pair {q.id}", items, length, q.reference, allowed)


def validate_circo(
    submission: Mapping, queries: Sequence[Query], k: int = 50, gallery_ids: Collection[str] | None = None
) -> None:
    """Raise SubmissionError unless the CIRCO file follows the rules for these (all test) queries."""
    _check_keys("CIRCO", list(submission), queries)
    allowed = {int(g) for g in gallery_ids} if gallery_ids is not None else None
    for q in queries:
        items = submission[q.id]
        if not isinstance(items, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in items):
            raise SubmissionError(f"CIRCO query {q.id}: expected a list of integer image ids")
        _check_list(f"CIRCO query {q.id}", items, k, int(q.reference), allowed)


def cirr_submission(
    queries: Sequence[Query], ranked: Mapping[str, list[str]], subset_ranked: Mapping[str, list[str]], k: int = 50
) -> tuple[dict, dict]:
    """(recall, recall_subset) objects from each query's ranking and subset ranking (by query id)."""
    recall: dict = {"version": "rc2", "metric": "recall"}
    subset: dict = {"version": "rc2", "metric": "recall_subset"}
    for q in queries:  # a query without a ranking (dropped) stays absent, and validation names it
        if q.id in ranked:
            recall[q.id] = list(ranked[q.id])[:k]
        if q.id in subset_ranked:
            subset[q.id] = list(subset_ranked[q.id])[:3]
    return recall, subset


def circo_submission(queries: Sequence[Query], ranked: Mapping[str, list[str]], k: int = 50) -> dict:
    """{query id: [k integer image ids]}."""
    return {q.id: [int(x) for x in ranked[q.id][:k]] for q in queries if q.id in ranked}


def write_json_checked(obj: Mapping, path: Path, max_bytes: int = MAX_BYTES) -> Path:
    """Write `obj` as JSON unless it would exceed `max_bytes` (the servers' limit)."""
    text = json.dumps(obj)
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise SubmissionError(f"{path}: {size} bytes exceeds the {max_bytes}-byte limit")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_submission(
    kind: str,
    out_dir: Path,
    queries: Sequence[Query],
    ranked: Mapping[str, list[str]],
    subset_ranked: Mapping[str, list[str]] | None,
    gallery_ids: Collection[str],
    k: int = 50,
) -> list[Path]:
    """Build, validate and write the `kind` ("cirr" / "circo") submission for every query; returns paths."""
    k = min(k, len(gallery_ids) - 1)  # the reference is never listed
    if kind == "cirr":
        recall, subset = cirr_submission(queries, ranked, subset_ranked or {}, k)
        validate_cirr(recall, subset, queries, k, set(gallery_ids))
        return [
            write_json_checked(recall, out_dir / "cirr_test1_recall.json"),
            write_json_checked(subset, out_dir / "cirr_test1_recall_subset.json"),
        ]
    if kind == "circo":
        submission = circo_submission(queries, ranked, k)
        validate_circo(submission, queries, k, gallery_ids)
        return [write_json_checked(submission, out_dir / "circo_test_submission.json")]
    raise ValueError(f"unknown submission kind {kind!r}; expected 'cirr' or 'circo'")
