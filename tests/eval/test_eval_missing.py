"""Missing and unreadable files at evaluation: every file is checked before anything is encoded; a
query whose reference or target cannot be read is an error naming the exact override
(`allow_missing`), which drops such queries, counts and lists them; distractors are skipped."""

from __future__ import annotations

import pytest
from helpers_eval import ColourRetriever, brute_force_rankings, ref_recall
from layouts_eval import make_circo, make_cirr, make_webvid_covr

from covr.data.errors import MissingVideosError
from covr.eval import evaluate_benchmark


def evaluate(retriever, cfg, tmp_path, **options):
    return evaluate_benchmark(retriever, {"protocol": "covr", **cfg}, tmp_path / "out", **{"batch_size": 4, "num_workers": 0, **options})


def test_missing_and_unopenable_distractors_are_skipped_before_encoding(tmp_path):
    fixture = make_cirr(tmp_path / "CIRR", "val", n_images=20)
    needed = {q["reference"] for q in fixture["queries"]} | {q["target"] for q in fixture["queries"]}
    (missing, missing_path), (broken, broken_path) = [(i, p) for i, p in fixture["gallery"] if i not in needed][:2]
    missing_path.unlink()
    broken_path.write_bytes(b"not a png at all")
    retriever = ColourRetriever()
    result = evaluate(retriever, {"reader": "cirr", "root": tmp_path / "CIRR"}, tmp_path)
    assert result["counts"]["gallery_skipped"] == 2 and result["counts"]["gallery"] == 18
    assert retriever.calls["target"] == 18  # the broken file never reached the decoder or the model
    skipped = result["tasks"]["cirr/val"]["skipped_gallery_files"]
    assert any(missing in s and "file not found" in s for s in skipped) and any(broken in s and "does not open" in s for s in skipped)
    gallery = [(i, p) for i, p in fixture["gallery"] if i not in (missing, broken)]
    brute = brute_force_rankings(ColourRetriever(), gallery, fixture["queries"], "mean")
    for k in (1, 5, 10, 50):
        assert result["metrics"][f"R@{k}"] == pytest.approx(ref_recall(brute, [q["target"] for q in fixture["queries"]], k))


def test_missing_target_fails_before_encoding_or_drops_its_queries(tmp_path):
    fixture = make_cirr(tmp_path / "CIRR", "val", n_images=20)
    references = {q["reference"] for q in fixture["queries"]}
    target = next(q["target"] for q in fixture["queries"] if q["target"] not in references)
    dict(fixture["gallery"])[target].unlink()
    retriever = ColourRetriever()
    with pytest.raises(MissingVideosError, match=rf"cirr/val: query \d+: target {target}: file not found.*benchmark\.cirr\.allow_missing=true"):
        evaluate(retriever, {"reader": "cirr", "name": "cirr", "root": tmp_path / "CIRR"}, tmp_path)
    assert not retriever.calls  # failed in the up-front check: nothing was encoded
    result = evaluate(ColourRetriever(), {"reader": "cirr", "root": tmp_path / "CIRR", "allow_missing": True}, tmp_path)
    answerable = [q for q in fixture["queries"] if q["target"] != target]
    assert result["counts"]["queries"] == len(answerable) and result["counts"]["queries_dropped"] == len(fixture["queries"]) - len(answerable)
    assert all(f"target {target}" in line for line in result["tasks"]["cirr/val"]["dropped_queries"])
    gallery = [(i, p) for i, p in fixture["gallery"] if i != target]
    brute = brute_force_rankings(ColourRetriever(), gallery, answerable, "mean")
    assert result["metrics"]["R@5"] == pytest.approx(ref_recall(brute, [q["target"] for q in answerable], 5))  # over the answerable queries


def test_unreadable_target_video_names_the_training_override(tmp_path):
    fixture = make_webvid_covr(tmp_path / "webvid", n_queries=6, real_videos=True)
    bad = fixture["queries"][2]["target"]
    (tmp_path / "webvid" / "videos" / f"{bad}.mp4").write_bytes(b"\x00" * 64)  # exists, not empty, does not open
    cfg = {"reader": "webvid_covr", "name": "toy", "annotation": fixture["csv"], "video_root": tmp_path / "webvid" / "videos"}
    retriever = ColourRetriever()
    with pytest.raises(MissingVideosError, match=rf"query 2: target {bad}: does not open.*test\.toy\.allow_missing=true"):
        evaluate(retriever, cfg, tmp_path, override_prefix="test")  # the path of the test block in a training config
    assert not retriever.calls
    result = evaluate(ColourRetriever(), {**cfg, "allow_missing": True}, tmp_path)
    assert result["counts"]["queries"] == 5 and result["counts"]["queries_dropped"] == 1 and result["counts"]["gallery_skipped"] == 1


@pytest.mark.parametrize("broken", ["missing", "empty"])
def test_missing_or_empty_reference_fails_naming_it_or_is_dropped(tmp_path, broken):
    fixture = make_circo(tmp_path / "CIRCO", "val")
    query = fixture["queries"][2]
    query["path"].unlink() if broken == "missing" else query["path"].write_bytes(b"")
    cfg = {"reader": "circo", "root": tmp_path / "CIRCO"}
    reason = "file not found" if broken == "missing" else r"empty file \(0 bytes\)"
    with pytest.raises(MissingVideosError, match=rf"query {query['id']}: reference {query['reference']} \(.*{query['path'].name}\): {reason}"):
        evaluate(ColourRetriever(), cfg, tmp_path)
    result = evaluate(ColourRetriever(), {**cfg, "allow_missing": True}, tmp_path)
    # the image is also another query's ground truth here: that query cannot be scored either
    affected = [q for q in fixture["queries"] if q["reference"] == query["reference"] or query["reference"] in q["gts"]]
    assert len(affected) == 2 and result["counts"]["queries_dropped"] == 2 and result["counts"]["queries"] == len(fixture["queries"]) - 2
    assert any(str(query["path"]) in line for line in result["tasks"]["circo/val"]["dropped_queries"])


def test_the_old_option_name_is_refused_with_the_new_one(tmp_path):
    make_circo(tmp_path / "CIRCO", "val")
    with pytest.raises(ValueError, match="'drop_missing_references' is now 'allow_missing'"):
        evaluate(ColourRetriever(), {"reader": "circo", "root": tmp_path / "CIRCO", "drop_missing_references": True}, tmp_path)
