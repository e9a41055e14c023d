"""The visual report (report=true): per benchmark an HTML page and a PNG contact sheet whose sampled
queries, top-k results, scores and ground-truth marks are those of the run's own rankings, misses
first; self-contained (every image a data URI); video references show several frames; a test split
has no ground truth to mark. The page in a real browser: test_eval_report_browser.py."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser

import pytest
from helpers_eval import ColourRetriever
from layouts_eval import make_cir_jsonl, make_cirr, make_webvid_covr
from PIL import Image

from covr.eval import evaluate_benchmark
from covr.eval.contact_sheet import CELL
from covr.eval.report_entries import sample_entries


class Page(HTMLParser):
    """The report's structure: per article its classes, query id, text, reference images and results."""

    def __init__(self):
        super().__init__()
        self.articles, self.images, self.external, self._in = [], [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "article":
            self.articles.append({"classes": classes, "query": a["data-query"], "results": [], "reference": 0, "text": ""})
        elif tag == "div" and "reference" in classes:
            self._in = "reference"
        elif tag == "li" and "result" in classes:
            self.articles[-1]["results"].append({"item": a["data-item"], "gt": "gt" in classes})
            self._in = "result"
        elif tag == "p" and "text" in classes:
            self._in = "text"
        elif tag == "img":
            self.images.append(a["src"])
            if self._in == "reference":
                self.articles[-1]["reference"] += 1
        for key in ("src", "href"):
            if key in a and not a[key].startswith("data:"):
                self.external.append(a[key])

    def handle_endtag(self, tag):
        if tag in ("div", "li", "p"):
            self._in = None if tag != "div" or self._in == "reference" else self._in

    def handle_data(self, data):
        if self._in == "text":
            self.articles[-1]["text"] += data


def _rankings(folder):
    return {r["query"]: r for r in map(json.loads, (folder / "rankings.jsonl").read_text().splitlines())}


def test_report_shows_the_run_rankings_misses_first(tmp_path):
    fixture = make_cir_jsonl(tmp_path / "EDIR", n_queries=10)
    cfg = {"reader": "cir_jsonl", "name": "edir", "annotation": str(tmp_path / "EDIR" / "edir.jsonl"),
           "image_root": str(tmp_path / "EDIR" / "images"), "gallery_file": str(tmp_path / "EDIR" / "gallery.txt"), "image_extension": ".jpg"}  # fmt: skip
    result = evaluate_benchmark(ColourRetriever(), cfg, tmp_path / "out", num_workers=0, save_rankings=True, report=True, report_queries=6, report_top_k=3)
    assert result["report"] == {"html": str(tmp_path / "out/report/edir.html"), "png": str(tmp_path / "out/report/edir.png")}
    page = Page()
    page.feed((tmp_path / "out/report/edir.html").read_text())
    rankings, truth = _rankings(tmp_path / "out/edir/test"), {q["id"]: q for q in fixture["queries"]}
    assert len(page.articles) == 6 and not page.external
    misses = [rankings[a["query"]]["ids"][0] not in truth[a["query"]]["gts"] for a in page.articles]
    assert misses == sorted(misses, reverse=True) and any(misses)  # misses first
    for article, miss in zip(page.articles, misses):
        ranking, q = rankings[article["query"]], truth[article["query"]]
        assert ("miss" in article["classes"]) == miss and article["text"] == q["text"] and article["reference"] == 1
        assert [r["item"] for r in article["results"]] == ranking["ids"][:3]
        assert [r["gt"] for r in article["results"]] == [i in q["gts"] for i in ranking["ids"][:3]]
    for src in page.images:  # every thumbnail is an embedded JPEG that decodes
        assert Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).format == "JPEG"
    sheet = Image.open(tmp_path / "out/report/edir.png")
    assert sheet.height > 6 * CELL and len(set(sheet.convert("RGB").getdata())) > 50


def test_video_references_show_several_frames_and_a_test_split_marks_nothing(tmp_path):
    make_webvid_covr(tmp_path / "webvid", n_queries=5, real_videos=True)
    cfg = {"reader": "webvid_covr", "annotation": str(tmp_path / "webvid" / "webvid8m-covr_test.csv"), "video_root": str(tmp_path / "webvid" / "videos"), "target_frames": 2}
    evaluate_benchmark(ColourRetriever(), cfg, tmp_path / "out", num_workers=0, report=True, report_queries=3)
    page = Page()
    page.feed((tmp_path / "out/report/webvid_covr.html").read_text())
    assert len(page.articles) == 3 and all(a["reference"] == 3 for a in page.articles)  # three frames of each reference video
    make_cirr(tmp_path / "CIRR", "test1")
    evaluate_benchmark(ColourRetriever(), {"reader": "cirr", "root": str(tmp_path / "CIRR"), "split": "test1"}, tmp_path / "out2", num_workers=0, report=True)
    page = Page()
    page.feed((tmp_path / "out2/report/cirr.html").read_text())
    assert page.articles and all(a["classes"] == ["query", "unlabelled"] and not any(r["gt"] for r in a["results"]) for a in page.articles)


def test_sampling_is_seeded_and_bounded():
    from covr.eval.datasets.base import Query

    queries = [Query(id=str(i), reference="r", reference_path=None, text="t", target=str(i % 3)) for i in range(30)]
    ranked = [["0", "1", "2"]] * 30
    scores = [[0.9, 0.5, 0.1]] * 30
    first = sample_entries(queries, ranked, scores, {}, 8, 2)
    assert [e.query for e in first] == [e.query for e in sample_entries(queries, ranked, scores, {}, 8, 2)]
    assert len(first) == 8 and all(len(e.results) == 2 for e in first)
    assert [e.miss for e in first] == sorted((e.miss for e in first), reverse=True)
    assert {e.rank for e in first if not e.miss} == {1} and len(sample_entries(queries, ranked, scores, {}, 100, 2)) == 30


@pytest.mark.parametrize("bad", ["report_queries=0", "report_top_k=0"])
def test_report_options_are_checked(bad):
    from omegaconf import OmegaConf

    from covr.training.schema import config_problem

    key, value = bad.split("=")
    assert config_problem(OmegaConf.create({key: int(value)})) == f"{key}=0 must be > 0"
