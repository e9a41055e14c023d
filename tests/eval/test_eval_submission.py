"""Submission files follow the test servers' format rules; invalid ones are rejected before writing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from covr.eval.datasets.base import Query
from covr.eval.submission import SubmissionError, validate_circo, validate_cirr, write_json_checked, write_submission

NAMES = [f"test1-{i}-0-img0" for i in range(60)]


def cirr_queries():
    return [Query(id=str(p), reference=NAMES[p], reference_path=Path("x"), text="t", subset=tuple(NAMES[p : p + 6])) for p in range(4)]


def good_cirr():
    queries = cirr_queries()
    recall = {"version": "rc2", "metric": "recall"}
    subset = {"version": "rc2", "metric": "recall_subset"}
    for q in queries:
        recall[q.id] = [n for n in NAMES if n != q.reference][:50]
        subset[q.id] = list(q.subset[1:4])
    return queries, recall, subset


def test_valid_cirr_passes_and_is_written(tmp_path):
    queries, _, _ = good_cirr()
    ranked = {q.id: [n for n in NAMES if n != q.reference] for q in queries}
    subset_ranked = {q.id: list(q.subset[1:]) for q in queries}
    paths = write_submission("cirr", tmp_path, queries, ranked, subset_ranked, NAMES)
    recall, subset = (json.loads(p.read_text()) for p in paths)
    assert recall["version"] == "rc2" and len(recall) == 2 + len(queries)
    assert all(len(recall[q.id]) == 50 for q in queries) and all(len(subset[q.id]) == 3 for q in queries)


@pytest.mark.parametrize(
    "breakage,message",
    [
        (lambda r, s: r["0"].__setitem__(1, r["0"][0]), "listed twice"),
        (lambda r, s: r["0"].pop(), "exactly 50"),
        (lambda r, s: r["1"].__setitem__(0, NAMES[1]), "the reference"),
        (lambda r, s: r.pop("2"), "1 queries missing, e.g. '2'"),
        (lambda r, s: r.__setitem__("99", r["0"]), "unknown query id '99'"),
        (lambda r, s: r["0"].__setitem__(0, r["0"][0] + ".png"), "without extension"),
        (lambda r, s: r.__setitem__("version", "rc1"), '"version": "rc2"'),
        (lambda r, s: s.__setitem__("metric", "recall"), '"metric": "recall_subset"'),
        (lambda r, s: s["0"].__setitem__(0, NAMES[40]), "not an allowed id"),
        (lambda r, s: s["3"].append(NAMES[8]), "exactly 3"),
    ],
)
def test_invalid_cirr_is_rejected(breakage, message):
    queries, recall, subset = good_cirr()
    recall, subset = copy.deepcopy(recall), copy.deepcopy(subset)
    validate_cirr(recall, subset, queries, 50, set(NAMES))
    breakage(recall, subset)
    with pytest.raises(SubmissionError, match=message):
        validate_cirr(recall, subset, queries, 50, set(NAMES))


def test_circo_rules(tmp_path):
    ids = [str(1000 + i) for i in range(70)]
    queries = [Query(id=str(n), reference=ids[n], reference_path=Path("x"), text="t") for n in range(3)]
    ranked = {q.id: [i for i in ids if i != q.reference] for q in queries}
    (path,) = write_submission("circo", tmp_path, queries, ranked, None, ids)
    good = json.loads(path.read_text())
    assert set(good) == {"0", "1", "2"} and all(len(v) == 50 and all(isinstance(x, int) for x in v) for v in good.values())
    for breakage, message in [
        (lambda s: s["0"].__setitem__(3, s["0"][2]), "listed twice"),
        (lambda s: s["1"].__setitem__(0, 1001), "the reference 1001"),
        (lambda s: s["2"].__setitem__(0, "1050"), "integer image ids"),
        (lambda s: s.pop("0"), "queries missing"),
        (lambda s: s["0"].pop(), "exactly 50"),
        (lambda s: s["0"].__setitem__(0, 5), "not an allowed id"),
    ]:
        bad = copy.deepcopy(good)
        breakage(bad)
        with pytest.raises(SubmissionError, match=message):
            validate_circo(bad, queries, 50, ids)


def test_size_limit_and_dropped_queries(tmp_path):
    with pytest.raises(SubmissionError, match="exceeds the 100-byte limit"):
        write_json_checked({"x": "y" * 200}, tmp_path / "big.json", max_bytes=100)
    assert not (tmp_path / "big.json").exists()
    queries, _, _ = good_cirr()
    ranked = {q.id: [n for n in NAMES if n != q.reference] for q in queries[1:]}  # query 0 dropped
    with pytest.raises(SubmissionError, match="queries missing"):
        write_submission("cirr", tmp_path, queries, ranked, {q.id: list(q.subset[1:]) for q in queries}, NAMES)
