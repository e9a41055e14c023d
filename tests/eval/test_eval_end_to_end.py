"""Every benchmark end to end on tiny official-layout fixtures: metrics equal the brute-force reference.

These run covr's own protocol (`protocol: covr`, the reference removed from the ranking), which the
brute force below implements item by item; the published protocols (`covr2`) are checked against
their transcriptions in test_eval_protocols.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_eval import ColourRetriever, brute_force_rankings, ref_map, ref_recall
from layouts_eval import make_circo, make_cir_jsonl, make_cirr, make_fashioniq, make_webvid_covr

from covr.data import transforms
from covr.eval import evaluate_benchmark, evaluate_benchmarks
from covr.eval.submission import validate_circo, validate_cirr


def evaluate(retriever, cfg, tmp_path, **options):
    options = {"batch_size": 3, "num_workers": 0, "save_rankings": True, **options}
    result = evaluate_benchmark(retriever, {"protocol": "covr", **cfg}, tmp_path / "out", **options)
    saved = {}
    for task in result["tasks"]:  # rankings.jsonl per task -> {task: {"ranked": {query id: ids}}}
        lines = [json.loads(line) for line in (tmp_path / "out" / task / "rankings.jsonl").read_text().splitlines()]
        saved[task] = {"ranked": {line["query"]: line["ids"] for line in lines}}
    return result, saved


def subset_top(ranking, query, k):
    return [x for x in ranking if x in query["subset"] and x != query["reference"]][:k]


@pytest.mark.parametrize("mode", ["mean", "max_target_token", "max_token_pair"])
def test_cirr_val(tmp_path, mode):
    fixture = make_cirr(tmp_path / "CIRR", "val")
    retriever = ColourRetriever()
    result, saved = evaluate(retriever, {"reader": "cirr", "root": str(tmp_path / "CIRR"), "split": "val"}, tmp_path, similarity=mode)
    brute = brute_force_rankings(ColourRetriever(), fixture["gallery"], fixture["queries"], mode)
    queries = fixture["queries"]
    assert saved["cirr/val"]["ranked"] == {q["id"]: b[:50] for q, b in zip(queries, brute)}
    targets = [q["target"] for q in queries]
    metrics = result["metrics"]
    for k in (1, 5, 10, 50):
        assert metrics[f"R@{k}"] == pytest.approx(ref_recall(brute, targets, k))
    for k in (1, 2, 3):
        expected = 100 * np.mean([q["target"] in subset_top(b, q, k) for q, b in zip(queries, brute)])
        assert metrics[f"Rs@{k}"] == pytest.approx(expected)
    assert metrics["Avg"] == pytest.approx((metrics["R@5"] + metrics["Rs@1"]) / 2)
    assert result["counts"]["queries"] == 8 and result["counts"]["gallery"] == 14
    assert result["options"]["similarity_mode"] == mode and result["submissions"] == []


def test_cirr_test1_writes_valid_submissions(tmp_path):
    fixture = make_cirr(tmp_path / "CIRR", "test1", n_images=56, n_queries=5)
    result, _ = evaluate(ColourRetriever(), {"reader": "cirr", "root": str(tmp_path / "CIRR"), "split": "test1"}, tmp_path, num_workers=2)
    recall_path, subset_path = sorted(result["submissions"])
    recall, subset = json.loads(open(recall_path).read()), json.loads(open(subset_path).read())
    assert recall["metric"] == "recall" and subset["metric"] == "recall_subset" and result["metrics"] == {}
    brute = brute_force_rankings(ColourRetriever(), fixture["gallery"], fixture["queries"], "mean")
    for q, b in zip(fixture["queries"], brute):
        assert recall[q["id"]] == b[:50] and len(recall[q["id"]]) == 50
        assert subset[q["id"]] == subset_top(b, q, 3)
    from covr.eval.datasets import load_benchmark

    queries = load_benchmark("cirr", {"root": tmp_path / "CIRR", "split": "test1"}).tasks[0].queries
    validate_cirr(recall, subset, queries, 50, {n for n, _ in fixture["gallery"]})


@pytest.mark.parametrize("reference_in_gallery", [True, False])
def test_fashioniq(tmp_path, reference_in_gallery):
    fixture = make_fashioniq(tmp_path / "fiq")
    cfg = {"reader": "fashioniq", "root": str(tmp_path / "fiq"), "reference_in_gallery": reference_in_gallery}
    result, saved = evaluate(ColourRetriever(), cfg, tmp_path)
    assert result["options"]["reference_in_gallery"] is reference_in_gallery
    per_category = {}
    for category, part in fixture.items():
        queries = [{**q, "exclude": () if reference_in_gallery else (q["reference"],)} for q in part["queries"]]
        brute = brute_force_rankings(ColourRetriever(), part["gallery"], queries, "mean")
        assert saved[f"fashioniq/val/{category}"]["ranked"] == {q["id"]: b[:50] for q, b in zip(queries, brute)}
        per_category[category] = {k: ref_recall(brute, [q["target"] for q in queries], k) for k in (10, 50)}
        assert result["metrics"][f"{category}/R@10"] == pytest.approx(per_category[category][10])
    assert result["metrics"]["R@10"] == pytest.approx(np.mean([m[10] for m in per_category.values()]))
    assert result["metrics"]["Avg"] == pytest.approx((result["metrics"]["R@10"] + result["metrics"]["R@50"]) / 2)


@pytest.mark.parametrize("shared_concept", [None, "prepend"])
def test_circo_val(tmp_path, shared_concept):
    fixture = make_circo(tmp_path / "CIRCO", "val")
    cfg = {"reader": "circo", "root": str(tmp_path / "CIRCO"), "split": "val", "shared_concept": shared_concept}
    result, _ = evaluate(ColourRetriever(), cfg, tmp_path)
    queries = fixture["queries"]
    if shared_concept:
        queries = [{**q, "text": f"an animal {q['text']}"} for q in queries]
    brute = brute_force_rankings(ColourRetriever(), fixture["gallery"], queries, "mean")
    for k in (5, 10, 25, 50):
        assert result["metrics"][f"mAP@{k}"] == pytest.approx(ref_map(brute, [q["gts"] for q in queries], k))
    for k in (1, 5, 10, 50):
        assert result["metrics"][f"R@{k}"] == pytest.approx(ref_recall(brute, [q["target"] for q in queries], k))
    assert result["options"]["shared_concept"] == shared_concept


def test_circo_test_submission(tmp_path):
    fixture = make_circo(tmp_path / "CIRCO", "test", n_images=55, n_queries=4)
    result, _ = evaluate(ColourRetriever(), {"reader": "circo", "root": str(tmp_path / "CIRCO"), "split": "test"}, tmp_path)
    (path,) = result["submissions"]
    submission = json.loads(open(path).read())
    brute = brute_force_rankings(ColourRetriever(), fixture["gallery"], fixture["queries"], "mean")
    assert submission == {q["id"]: [int(x) for x in b[:50]] for q, b in zip(fixture["queries"], brute)}
    from covr.eval.datasets import load_benchmark

    validate_circo(submission, load_benchmark("circo", {"root": tmp_path / "CIRCO", "split": "test"}).tasks[0].queries)


def test_webvid_covr(tmp_path):
    """Real mp4 files through covr.data.video: 15 uniform target frames, the middle query frame;
    txt1 reaches the model as the caption; the query's own reference video is masked."""
    from covr.data.video import load_frames

    fixture = make_webvid_covr(tmp_path / "webvid", n_queries=7, real_videos=True)
    retriever = ColourRetriever()
    cfg = {"reader": "webvid_covr", "annotation": str(fixture["csv"]), "video_root": str(tmp_path / "webvid" / "videos")}
    result, saved = evaluate(retriever, cfg, tmp_path, num_workers=2)
    assert retriever.captions_seen[:2] == ["a city 0", "a city 1"]  # txt1 reaches encode_query
    assert result["counts"]["gallery_skipped"] == 0 and result["options"]["target_frames"] == 15  # the reader's default

    def target_loader(path, size):
        return transforms.TestTransform(size)(load_frames(path, 15, "uniform"))[None]

    def query_loader(path, size):
        return transforms.TestTransform(size)(load_frames(path, 1, "middle"))[None]

    brute = brute_force_rankings(ColourRetriever(), fixture["gallery"], fixture["queries"], "mean", target_loader, query_loader)
    assert saved["webvid_covr/test"]["ranked"] == {q["id"]: b for q, b in zip(fixture["queries"], brute)}
    assert fixture["queries"][0]["exclude"][0] not in saved["webvid_covr/test"]["ranked"]["0"]
    for k in (1, 5, 10, 50):
        assert result["metrics"][f"R@{k}"] == pytest.approx(ref_recall(brute, [q["target"] for q in fixture["queries"]], k))
    m = result["metrics"]
    assert m["meanR3"] == pytest.approx((m["R@1"] + m["R@5"] + m["R@10"]) / 3)
    assert m["meanR4"] == pytest.approx((m["R@1"] + m["R@5"] + m["R@10"] + m["R@50"]) / 4)


@pytest.mark.parametrize("gallery_file", [True, False])
def test_cir_jsonl_with_categories(tmp_path, gallery_file):
    fixture = make_cir_jsonl(tmp_path / "edir")
    root = tmp_path / "edir"
    cfg = {"reader": "cir_jsonl", "name": "edir", "annotation": str(root / "edir.jsonl"), "image_root": str(root / "images"),
           "image_extension": ".jpg", "gallery_file": str(root / "gallery.txt") if gallery_file else None}  # fmt: skip
    result, saved = evaluate(ColourRetriever(), cfg, tmp_path)
    gallery = fixture["gallery"]
    if not gallery_file:  # union of targets / ground truths, in first-appearance order
        union = dict.fromkeys(g for q in fixture["queries"] for g in q["gts_order"])
        gallery = [(i, root / "images" / f"{i}.jpg") for i in union]
    assert result["counts"]["gallery"] == len(gallery)
    brute = brute_force_rankings(ColourRetriever(), gallery, fixture["queries"], "mean")
    queries = fixture["queries"]
    assert result["metrics"]["mAP@10"] == pytest.approx(ref_map(brute, [q["gts"] for q in queries], 10))
    for field in ("category", "subcategory"):
        for value, metrics in result["tasks"]["edir/test"]["by_category"][field].items():
            rows = [i for i, q in enumerate(queries) if q["categories"][field] == value]
            assert metrics["queries"] == len(rows)
            assert metrics["R@5"] == pytest.approx(ref_recall([brute[i] for i in rows], [queries[i]["target"] for i in rows], 5))
            assert metrics["mAP@5"] == pytest.approx(ref_map([brute[i] for i in rows], [queries[i]["gts"] for i in rows], 5))


def test_evaluate_benchmarks_writes_results_and_table(tmp_path, capsys):
    make_cirr(tmp_path / "CIRR", "val")
    make_circo(tmp_path / "CIRCO", "val")
    benchmarks = {"cirr": {"root": str(tmp_path / "CIRR")}, "circo": {"root": str(tmp_path / "CIRCO")}}
    results = evaluate_benchmarks(ColourRetriever(), benchmarks, tmp_path / "run", batch_size=4, num_workers=0)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(saved) == {"cirr", "circo"} and saved["cirr"]["metrics"] == pytest.approx(results["cirr"]["metrics"])
    table = capsys.readouterr().out
    assert "cirr" in table and "mAP@5" in table and "Rs@1" in table


def test_faiss_backend_matches_exact(tmp_path):
    pytest.importorskip("faiss")
    make_circo(tmp_path / "CIRCO", "val", n_images=40)
    cfg = {"reader": "circo", "root": str(tmp_path / "CIRCO")}
    exact, exact_ranks = evaluate(ColourRetriever(), cfg, tmp_path)
    approx, faiss_ranks = evaluate(ColourRetriever(), cfg, tmp_path, backend="faiss")
    assert faiss_ranks == exact_ranks and approx["metrics"] == exact["metrics"]
    assert approx["options"]["backend"] == "faiss"
    with pytest.raises(ValueError, match="supports similarity 'mean' only"):
        evaluate(ColourRetriever(), cfg, tmp_path, backend="faiss", similarity="max_target_token")
