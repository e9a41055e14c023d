"""Bad data: malformed annotation files name the file and entry; the gallery cache; caption files.
(Missing and unreadable media files: test_eval_missing.py.)"""

from __future__ import annotations

import json

import pytest
from helpers_eval import ColourRetriever, brute_force_rankings, ref_recall, write_json
from layouts_eval import make_circo, make_cir_jsonl, make_cirr, make_fashioniq, make_webvid_covr

from covr.data.errors import AnnotationError
from covr.eval import evaluate_benchmark
from covr.eval.datasets import load_benchmark


def evaluate(retriever, cfg, tmp_path, **options):
    """covr's protocol (the reference removed), as the brute force ranks."""
    return evaluate_benchmark(retriever, {"protocol": "covr", **cfg}, tmp_path / "out", **{"batch_size": 4, "num_workers": 0, **options})


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
    max_mode = evaluate(retriever, cfg, tmp_path, cache_dir=tmp_path / "cache", similarity="max_target_token")
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
