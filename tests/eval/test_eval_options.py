"""Evaluator options: text cleaning (one function, switchable), query frames from the checkpoint,
the gallery cache shared by splits, the protocol and chance levels in results and table."""

from __future__ import annotations

import json

import pytest
from helpers_eval import ColourRetriever, write_json
from layouts_eval import make_circo, make_fashioniq, make_webvid_covr

from covr.data.text import clean_text
from covr.eval import evaluate_benchmark, evaluate_benchmarks, format_results_table


def evaluate(retriever, cfg, tmp_path, **options):
    return evaluate_benchmark(retriever, cfg, tmp_path / "out", **{"batch_size": 4, "num_workers": 0, **options})


@pytest.mark.parametrize("clean", [True, False])
def test_query_texts_and_captions_are_cleaned_as_in_training(tmp_path, clean):
    make_fashioniq(tmp_path / "fiq", categories=("dress",), n_images=6, n_queries=2)
    path = tmp_path / "fiq" / "captions" / "cap.dress.val.json"
    entries = json.loads(path.read_text())
    entries[0]["captions"] = ["Is RED!! (and) long", "has: no~sleeves."]
    path.write_text(json.dumps(entries))
    captions = write_json(tmp_path / "captions.json", {e["candidate"]: "A \"DRESS\" on a * chair." for e in entries})
    retriever = ColourRetriever()
    cfg = {"reader": "fashioniq", "root": tmp_path / "fiq", "categories": ["dress"], "caption_file": str(captions), "clean_text": clean}
    result = evaluate(retriever, cfg, tmp_path)
    raw = "Is RED!! (and) long and has: no~sleeves."
    assert retriever.texts_seen[0] == (clean_text(raw) if clean else raw)
    assert retriever.texts_seen[0] == ("is red and long and has no sleeves" if clean else raw)  # pre_caption by hand
    assert retriever.captions_seen[0] == ('a dress on a chair' if clean else 'A "DRESS" on a * chair.')
    assert result["options"]["clean_text"] is clean


def test_long_texts_keep_max_words(tmp_path):
    make_fashioniq(tmp_path / "fiq", categories=("dress",), n_images=6, n_queries=1)
    path = tmp_path / "fiq" / "captions" / "cap.dress.val.json"
    entries = json.loads(path.read_text())
    entries[0]["captions"] = [" ".join(f"w{i}" for i in range(20)), " ".join(f"v{i}" for i in range(20))]
    path.write_text(json.dumps(entries))
    retriever = ColourRetriever()
    evaluate(retriever, {"reader": "fashioniq", "root": tmp_path / "fiq", "categories": ["dress"], "max_words": 25}, tmp_path)
    assert retriever.texts_seen[0].split() == [f"w{i}" for i in range(20)] + ["and"] + [f"v{i}" for i in range(4)]


def test_query_frames_follow_the_checkpoint_unless_overridden(tmp_path):
    fixture = make_webvid_covr(tmp_path / "webvid", n_queries=4, real_videos=True)
    cfg = {"reader": "webvid_covr", "annotation": str(fixture["csv"]), "video_root": str(tmp_path / "webvid" / "videos")}
    plain = ColourRetriever()
    assert evaluate(plain, cfg, tmp_path)["tasks"]["webvid_covr/test"]["query_frames"] == {"num_frames": 1, "strategy": "middle", "from": "default"}
    assert set(plain.query_frames_seen) == {1}
    trained = ColourRetriever()
    trained.query_frames = {"num_frames": 3, "strategy": "random"}  # as a checkpoint records it
    task = evaluate(trained, cfg, tmp_path)["tasks"]["webvid_covr/test"]
    assert set(trained.query_frames_seen) == {3} and task["query_frames"] == {"num_frames": 3, "strategy": "uniform", "from": "checkpoint"}
    overridden = ColourRetriever()
    overridden.query_frames = {"num_frames": 3, "strategy": "uniform"}
    task = evaluate(overridden, {**cfg, "query_frames": 1}, tmp_path)["tasks"]["webvid_covr/test"]
    assert set(overridden.query_frames_seen) == {1} and task["query_frames"]["from"] == "config"


def test_circo_val_and_test_share_one_gallery_cache(tmp_path):
    make_circo(tmp_path / "CIRCO", "val", n_images=55)
    make_circo(tmp_path / "CIRCO", "test", n_images=55)  # the same seed: the same COCO listing
    retriever, cache = ColourRetriever(), tmp_path / "cache"
    val = evaluate(retriever, {"reader": "circo", "root": tmp_path / "CIRCO", "split": "val"}, tmp_path, cache_dir=cache)
    encoded = retriever.calls["target"]
    test = evaluate(retriever, {"reader": "circo", "root": tmp_path / "CIRCO", "split": "test"}, tmp_path, cache_dir=cache)
    assert (val["tasks"]["circo/val"]["gallery_cache"], test["tasks"]["circo/test"]["gallery_cache"]) == ("miss", "hit")
    assert retriever.calls["target"] == encoded == 55 and len(list(cache.glob("*.pt"))) == 1
    # what changes an embedding changes the key: frames, dtype, the gallery form the protocol needs
    import torch

    for change in ({"embedding_dtype": torch.float16}, {"similarity": "max_token_pair"}, {"save_embeddings": True}):
        other = evaluate(retriever, {"reader": "circo", "root": tmp_path / "CIRCO", "split": "val"}, tmp_path, cache_dir=cache, **change)
        assert other["tasks"]["circo/val"]["gallery_cache"] == "miss", change
    other = evaluate(retriever, {"reader": "circo", "root": tmp_path / "CIRCO", "target_frames": 2}, tmp_path, cache_dir=cache)
    assert other["tasks"]["circo/val"]["gallery_cache"] == "miss"


def test_results_and_table_state_protocol_media_and_chance(tmp_path, capsys):
    make_fashioniq(tmp_path / "fiq", categories=("dress", "shirt"), n_images=11, n_queries=3)
    fixture = make_webvid_covr(tmp_path / "webvid", n_queries=5, real_videos=True)
    benchmarks = {
        "fashioniq": {"root": str(tmp_path / "fiq"), "categories": ["dress", "shirt"]},
        "webvid_covr": {"annotation": str(fixture["csv"]), "video_root": str(tmp_path / "webvid" / "videos")},
    }
    results = evaluate_benchmarks(ColourRetriever(), benchmarks, tmp_path / "run", batch_size=4, num_workers=0)
    fiq = results["fashioniq"]
    assert fiq["protocol"]["name"] == "covr2" and fiq["protocol"]["mask_value"] == -10.0
    for task in fiq["tasks"].values():  # the reference is not a candidate: 10 of 11 images
        assert task["chance"]["R@10"] == pytest.approx(100.0) and task["chance"]["R@1"] == pytest.approx(10.0) and task["media"] == "images"
    web = results["webvid_covr"]["tasks"]["webvid_covr/test"]
    # a row whose reference is another row's target has that column masked: one candidate fewer
    targets = [q["target"] for q in fixture["queries"]]
    candidates = [5 - targets.count(q["exclude"][0]) for q in fixture["queries"]]
    assert candidates.count(4) == 2 and web["media"] == "videos"
    assert web["chance"]["R@1"] == pytest.approx(100 * sum(1 / c for c in candidates) / 5)
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:6] == ["benchmark", "split", "protocol", "queries", "gallery", "chance"]
    dress = next(line for line in table if line.strip().startswith("dress"))
    assert "22 images" not in dress and "11 images" in dress and "R@10 100.00" in dress
    webvid = next(line for line in table if line.startswith("webvid_covr"))
    assert "covr2" in webvid and "5 videos" in webvid and "R@1 22.00" in webvid
    assert format_results_table([fiq]).splitlines()[1].startswith("fashioniq")
