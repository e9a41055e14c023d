"""Bad data: unreadable gallery files are skipped and counted, missing references fail or are
dropped, malformed annotation files name the file and entry; the gallery cache; caption files."""

from __future__ import annotations

import json

import pytest
from helpers_eval import ColourRetriever, brute_force_rankings, ref_recall, write_json
from layouts_eval import make_circo, make_cir_jsonl, make_cirr, make_fashioniq, make_webvid_covr

from covr.data.errors import AnnotationError, MissingVideosError
from covr.eval import evaluate_benchmark
from covr.eval.datasets import load_benchmark


def evaluate(retriever, cfg, tmp_path, **options):
    return evaluate_benchmark(retriever, cfg, tmp_path / "out", **{"batch_size": 4, "num_workers": 0, **options})


def _non_reference_images(fixture, count):
    references = {q["reference"] for q in fixture["queries"]}
    return [(i, p) for i, p in fixture["gallery"] if i not in references][:count]


def test_missing_and_unreadable_gallery_images_are_skipped_and_counted(tmp_path):
    fixture = make_cirr(tmp_path / "CIRR", "val", n_images=20)
    (missing, missing_path), (broken, broken_path) = _non_reference_images(fixture, 2)
    missing_path.unlink()
    broken_path.write_bytes(b"not a png at all")
    result = evaluate(ColourRetriever(), {"reader": "cirr", "root": tmp_path / "CIRR"}, tmp_path)
    assert result["counts"]["gallery_skipped"] == 2 and result["counts"]["gallery"] == 18
    skipped = result["tasks"]["cirr/val"]["skipped_gallery_files"]
    assert any(missing in s for s in skipped) and any(broken in s for s in skipped)
    gallery = [(i, p) for i, p in fixture["gallery"] if i not in (missing, broken)]
    brute = brute_force_rankings(ColourRetriever(), gallery, fixture["queries"], "mean")
    targets = [q["target"] for q in fixture["queries"]]
    assert result["counts"]["targets_not_in_gallery"] == sum(t in (missing, broken) for t in targets)
    for k in (1, 5, 10, 50):
        assert result["metrics"][f"R@{k}"] == pytest.approx(ref_recall(brute, targets, k))


def test_missing_query_reference_fails_naming_it_or_is_dropped(tmp_path):
    fixture = make_circo(tmp_path / "CIRCO", "val")
    query = fixture["queries"][2]
    query["path"].unlink()
    cfg = {"reader": "circo", "root": tmp_path / "CIRCO"}
    with pytest.raises(MissingVideosError, match=rf"query {query['id']}: reference '{query['reference']}'.*{query['path'].name}"):
        evaluate(ColourRetriever(), cfg, tmp_path)
    result = evaluate(ColourRetriever(), {**cfg, "drop_missing_references": True}, tmp_path)
    assert result["counts"]["queries_dropped"] == 1 and result["counts"]["queries"] == len(fixture["queries"]) - 1
    assert result["counts"]["gallery_skipped"] == 1  # the same file is a gallery image
    assert str(query["path"]) in result["tasks"]["circo/val"]["dropped_queries"][0]


def test_unreadable_query_reference_fails_or_is_dropped(tmp_path):
    fixture = make_webvid_covr(tmp_path / "webvid")
    query = fixture["queries"][-1]  # its reference is not a gallery video
    query["path"].write_bytes(b"garbage")
    cfg = {"reader": "webvid_covr", "annotation": fixture["csv"], "video_root": tmp_path / "webvid" / "videos"}
    from test_eval_end_to_end import _fake_video_loader

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("covr.eval.frames._load_frames", _fake_video_loader)
        with pytest.raises(MissingVideosError, match=f"query {query['id']}: reference"):
            evaluate(ColourRetriever(), cfg, tmp_path)
        result = evaluate(ColourRetriever(), {**cfg, "drop_missing_references": True}, tmp_path)
    assert result["counts"]["queries_dropped"] == 1 and result["counts"]["gallery_skipped"] == 0


def test_gallery_cache_hit_skips_encoding(tmp_path):
    make_fashioniq(tmp_path / "fiq", categories=("dress", "shirt"))
    cfg = {"reader": "fashioniq", "root": tmp_path / "fiq", "categories": ["dress", "shirt"]}
    retriever = ColourRetriever()
    first = evaluate(retriever, cfg, tmp_path, cache_dir=tmp_path / "cache")
    encoded = retriever.calls["target"]
    assert encoded == 48 and {t["gallery_cache"] for t in first["tasks"].values()} == {"miss"}
    second = evaluate(retriever, cfg, tmp_path, cache_dir=tmp_path / "cache")
    assert retriever.calls["target"] == encoded  # encode_target never called again
    assert {t["gallery_cache"] for t in second["tasks"].values()} == {"hit"}
    assert second["metrics"] == first["metrics"]
    other = evaluate(ColourRetriever(identity="colour-v2"), cfg, tmp_path, cache_dir=tmp_path / "cache")
    assert {t["gallery_cache"] for t in other["tasks"].values()} == {"miss"}  # another checkpoint
    max_mode = evaluate(retriever, cfg, tmp_path, cache_dir=tmp_path / "cache", mode="max")
    assert {t["gallery_cache"] for t in max_mode["tasks"].values()} == {"miss"}  # token gallery
    for path in (tmp_path / "cache").glob("*.pt"):
        path.write_bytes(b"truncated")  # a broken cache file is re-encoded, not trusted
    again = evaluate(retriever, cfg, tmp_path, cache_dir=tmp_path / "cache")
    assert {t["gallery_cache"] for t in again["tasks"].values()} == {"miss"} and again["metrics"] == first["metrics"]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_caption_file_reaches_the_model(tmp_path, suffix):
    fixture = make_cirr(tmp_path / "CIRR", "val")
    captions = {n: f"a photo of {n}" for n, _ in fixture["gallery"]}
    path = tmp_path / f"captions{suffix}"
    if suffix == ".json":
        write_json(path, captions)
    else:
        path.write_text("\n".join(json.dumps({"id": n, "caption": c}) for n, c in captions.items()))
    retriever = ColourRetriever()
    result = evaluate(retriever, {"reader": "cirr", "root": tmp_path / "CIRR", "caption_file": str(path)}, tmp_path)
    assert retriever.captions_seen == [captions[q["reference"]] for q in fixture["queries"]]
    assert result["options"]["caption_file"] == str(path)
    brute = brute_force_rankings(ColourRetriever(), fixture["gallery"], [{**q, "caption": captions[q["reference"]]} for q in fixture["queries"]], "mean")
    assert result["metrics"]["R@5"] == pytest.approx(ref_recall(brute, [q["target"] for q in fixture["queries"]], 5))
    del captions[fixture["queries"][0]["reference"]]
    write_json(tmp_path / "partial.json", captions)
    with pytest.raises(AnnotationError, match=f"partial.json: no caption for reference '{fixture['queries'][0]['reference']}'"):
        evaluate(retriever, {"reader": "cirr", "root": tmp_path / "CIRR", "caption_file": tmp_path / "partial.json"}, tmp_path)


def _corrupt(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "make,reader,relative,edit,message",
    [
        (make_cirr, "cirr", "captions/cap.rc2.val.json", lambda d: d[3].pop("reference"), r"cap.rc2.val.json: entry 3: missing field 'reference'"),
        (make_cirr, "cirr", "captions/cap.rc2.val.json", lambda d: d[1].update(target_hard="nowhere"), r"entry 1: target_hard is not"),
        (make_cirr, "cirr", "image_splits/split.rc2.val.json", lambda d: d.update(bad=7), r"split.rc2.val.json: image 'bad'"),
        (make_fashioniq, "fashioniq", "captions/cap.shirt.val.json", lambda d: d[2].update(captions=["only one"]), r"cap.shirt.val.json: entry 2: expected two caption strings"),
        (make_circo, "circo", "annotations/val.json", lambda d: d[4].update(gt_img_ids="12"), r"val.json: entry 4: field 'gt_img_ids'"),
        (make_circo, "circo", "annotations/val.json", lambda d: d[0].update(reference_img_id=1), r"entry 0: reference image 1 is not in the COCO"),
    ],
)
def test_malformed_annotation_names_file_and_entry(tmp_path, make, reader, relative, edit, message):
    make(tmp_path / "data")
    _corrupt(tmp_path / "data" / relative, edit)
    with pytest.raises(AnnotationError, match=message):
        load_benchmark(reader, {"root": tmp_path / "data"})


def test_malformed_json_csv_and_jsonl(tmp_path):
    make_cirr(tmp_path / "CIRR")
    (tmp_path / "CIRR" / "captions" / "cap.rc2.val.json").write_text("[{oops")
    with pytest.raises(AnnotationError, match="cap.rc2.val.json: not valid JSON"):
        load_benchmark("cirr", {"root": tmp_path / "CIRR"})
    fixture = make_webvid_covr(tmp_path / "webvid")
    lines = fixture["csv"].read_text().splitlines()
    fixture["csv"].write_text("\n".join(lines[:3] + [lines[3].replace("make it night 2", "")] + lines[4:]))
    with pytest.raises(AnnotationError, match=r"webvid8m-covr_test.csv: row 4: empty edit"):
        load_benchmark("webvid_covr", {"annotation": fixture["csv"], "video_root": tmp_path})
    fixture["csv"].write_text("pth1,edit\na,b\n")
    with pytest.raises(AnnotationError, match=r"missing column\(s\) \['pth2', 'txt1'\]"):
        load_benchmark("webvid_covr", {"annotation": fixture["csv"], "video_root": tmp_path})
    make_cir_jsonl(tmp_path / "edir")
    path = tmp_path / "edir" / "edir.jsonl"
    path.write_text(path.read_text() + '{"reference": "img_1", "text": "x"}\n')
    with pytest.raises(AnnotationError, match=r"edir.jsonl: line 11: needs 'target' or 'ground_truths'"):
        load_benchmark("cir_jsonl", {"annotation": path, "image_root": tmp_path})


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark reader 'cirq'"):
        load_benchmark("cirq", {})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['splt'\]"):
        load_benchmark("cirr", {"root": tmp_path, "splt": "val"})
    with pytest.raises(ValueError, match=r"needs option\(s\) \['root'\]"):
        load_benchmark("circo", {})
