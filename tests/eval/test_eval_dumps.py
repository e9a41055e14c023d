"""save_rankings / save_embeddings: the dumps hold what an outside check needs, and recomputing the
metrics from embeddings.npz alone with the plain-loop transcription gives the evaluator's numbers
(videos decoded and encoded here, through the per-frame path)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import transcriptions as T
from helpers_eval import ColourRetriever
from layouts_eval import make_fashioniq, make_webvid_covr

from covr.eval import evaluate_benchmark


def _with_scores(csv_path, rng):
    """Give every other row 15 per-frame scores (one per stored frame: softmax weights)."""
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    for n, row in enumerate(rows):
        row["scores"] = "[" + ", ".join(f"{s:.3f}" for s in rng.uniform(0.1, 0.5, 15)) + "]" if n % 2 == 0 else ""
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_webvid_covr2_metrics_recomputed_from_the_dumps(tmp_path):
    fixture = make_webvid_covr(tmp_path / "webvid", n_queries=8, real_videos=True)
    _with_scores(fixture["csv"], np.random.default_rng(0))
    cfg = {"reader": "webvid_covr", "annotation": str(fixture["csv"]), "video_root": str(tmp_path / "webvid" / "videos")}
    result = evaluate_benchmark(ColourRetriever(), cfg, tmp_path / "out", batch_size=3, num_workers=0, save_rankings=True, save_embeddings=True)
    folder = tmp_path / "out" / "webvid_covr" / "test"
    assert sorted(result["tasks"]["webvid_covr/test"]["dumps"]) == sorted(str(folder / n) for n in ("embeddings.npz", "rankings.jsonl"))

    dump = np.load(folder / "embeddings.npz")
    assert dump["gallery_tokens"].shape[:2] == dump["gallery_frame_mask"].shape == (8, 15)
    assert dump["query_tokens"].shape == (8, 2, 8) and dump["gallery_frame_scores"].shape == (8, 15)
    frames_of = {g: dump["gallery_tokens"][n][dump["gallery_frame_mask"][n]].tolist() for n, g in enumerate(dump["gallery_ids"])}
    rows = [
        {"reference": str(r), "target": str(t), "scores": [float(s) for s in scores if not np.isnan(s)]}
        for r, t, scores in zip(dump["reference_ids"], dump["target_ids"], dump["query_frame_scores"])
    ]
    expected = T.webvid_covr2(rows, frames_of, dump["query_tokens"].tolist())
    for key, value in expected.items():
        assert result["metrics"][key] == pytest.approx(value)

    lines = [json.loads(line) for line in (folder / "rankings.jsonl").read_text().splitlines()]
    assert [line["query"] for line in lines] == [str(q) for q in dump["query_ids"]]
    for line in lines:  # one column per row, keyed by its query id; ids are the columns' target videos
        assert len(line["ids"]) == len(line["scores"]) == len(line["columns"]) == 8
        assert line["scores"] == sorted(line["scores"], reverse=True)
        by_query = {str(q): str(t) for q, t in zip(dump["query_ids"], dump["target_ids"])}
        assert line["ids"] == [by_query[c] for c in line["columns"]]
    hits = [line["columns"].index(line["query"]) < 1 for line in lines]
    assert 100.0 * np.mean(hits) == pytest.approx(result["metrics"]["R@1"])


def test_image_dumps_have_one_frame_and_no_frame_scores(tmp_path):
    make_fashioniq(tmp_path / "fiq", categories=("dress", "shirt"), n_images=10, n_queries=4)
    cfg = {"reader": "fashioniq", "root": str(tmp_path / "fiq"), "categories": ["dress", "shirt"]}
    result = evaluate_benchmark(ColourRetriever(), cfg, tmp_path / "out", batch_size=4, num_workers=0, save_rankings=True, save_embeddings=True)
    for category in ("dress", "shirt"):
        folder = tmp_path / "out" / "fashioniq" / "val" / category
        dump = np.load(folder / "embeddings.npz")
        assert dump["gallery_tokens"].shape == (10, 1, 2, 8) and dump["gallery_frame_mask"].all()
        assert "gallery_frame_scores" not in dump.files and dump["query_frame_scores"].shape == (4, 0)
        lines = [json.loads(line) for line in (folder / "rankings.jsonl").read_text().splitlines()]
        assert len(lines) == 4 and all("columns" not in line and line["reference"] == line["ids"][-1] for line in lines)  # covr2: -10, last
    assert result["tasks"]["fashioniq/val/dress"]["media"] == "images"
