"""The visual report in a real browser: headless Chromium (Debian's, driven by playwright's
`executable_path`; playwright cannot download a browser here) opens the page offline, finds every
element the run put there, loads every thumbnail, and renders a screenshot that is not blank.
Skipped, with the reason, only where no Chromium or no playwright exists (.ci/run installs both)."""

from __future__ import annotations

import io
import json
import os
import shutil

import pytest
from helpers_eval import ColourRetriever
from layouts_eval import make_cir_jsonl
from PIL import Image, ImageStat

from covr.eval import evaluate_benchmark

CHROMIUM = os.environ.get("COVR_CHROMIUM") or shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1280, "height": 900}
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def test_report_renders_in_headless_chromium(browser_page, tmp_path):
    fixture = make_cir_jsonl(tmp_path / "EDIR", n_queries=10)
    cfg = {"reader": "cir_jsonl", "name": "edir", "annotation": str(tmp_path / "EDIR" / "edir.jsonl"),
           "image_root": str(tmp_path / "EDIR" / "images"), "gallery_file": str(tmp_path / "EDIR" / "gallery.txt"), "image_extension": ".jpg"}  # fmt: skip
    result = evaluate_benchmark(ColourRetriever(), cfg, tmp_path / "out", num_workers=0, save_rankings=True, report=True, report_queries=6, report_top_k=4)
    rankings = {r["query"]: r for r in map(json.loads, (tmp_path / "out/edir/test/rankings.jsonl").read_text().splitlines())}
    truth = {q["id"]: q for q in fixture["queries"]}

    page, requests = browser_page, []
    page.on("request", lambda request: requests.append(request.url))
    page.goto("file://" + result["report"]["html"])
    page.wait_for_load_state("load")
    assert all(url.startswith(("file:", "data:")) for url in requests)  # opens offline: nothing fetched from a network

    articles = page.locator("article.query")
    assert articles.count() == 6
    misses = []
    for i in range(6):
        article = articles.nth(i)
        query = article.get_attribute("data-query")
        ranked, gts = rankings[query]["ids"], truth[query]["gts"]
        assert article.locator(".text").inner_text() == truth[query]["text"]
        assert article.locator("li.result").count() == 4
        assert article.locator("li.result.gt").count() == sum(i in gts for i in ranked[:4])
        assert [article.locator(".score").nth(k).inner_text() for k in range(4)] == [f"{s:.3f}" for s in rankings[query]["scores"][:4]]
        assert article.locator(".reference img").count() == 1
        misses.append("miss" in (article.get_attribute("class") or "").split())
        assert misses[-1] == (ranked[0] not in gts)
    assert any(misses) and misses == sorted(misses, reverse=True)  # misses first
    loaded = page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert loaded and page.evaluate("document.images.length") == 6 * 5
    assert "edir" in page.title()

    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    assert shot.width >= 1280 and shot.height > 6 * 100
    spread = ImageStat.Stat(shot).stddev
    assert min(spread) > 10 and len(set(shot.resize((320, 240)).getdata())) > 100  # not blank: text, frames, colours
