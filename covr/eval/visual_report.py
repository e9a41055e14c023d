"""A visual report of a benchmark run (`test.py ... report=true`): per benchmark one HTML page and
one PNG contact sheet (covr.eval.contact_sheet) of sampled queries, each with its reference
frame(s), its text, the top-k results with their scores and the ground truth marked; misses (no
ground truth at rank 1) first. The page is self-contained: thumbnails are embedded as data URIs
and the style is inline, so it opens offline from anywhere.

    <run>/report/<benchmark>.html   <run>/report/<benchmark>.png
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from covr.eval.contact_sheet import write_contact_sheet
from covr.eval.media import Media
from covr.eval.report_entries import REFERENCE_FRAMES, Entry, thumbnail


def data_uri(image: Image.Image) -> str:
    """A JPEG data URI of a thumbnail (embedded in the page: nothing next to it to lose)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


STYLE = """
body{font-family:system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:20px 0 6px} .summary{color:#555;margin:2px 0}
.query{display:flex;gap:12px;align-items:flex-start;background:#fff;border:1px solid #ddd;border-left:6px solid #2e7d32;
 border-radius:4px;padding:8px;margin:8px 0}
.query.miss{border-left-color:#c62828} .query.unlabelled{border-left-color:#999}
.reference{display:flex;gap:3px;flex:0 0 auto} .reference img{max-width:72px;max-height:72px}
.info{flex:0 0 220px;font-size:13px;overflow-wrap:anywhere}
.text{font-weight:600;margin:0 0 6px} .rank,.qid{color:#555;margin:2px 0}
.results{display:flex;flex:1 1 0;flex-wrap:wrap;gap:6px;list-style:none;margin:0;padding:0}
.result{width:108px;font-size:11px;text-align:center;border:3px solid transparent;border-radius:4px;padding:2px}
.result.gt{border-color:#2e7d32;background:#e8f5e9}
img{display:block;margin:auto;border:1px solid #ddd;background:#fff} .result img{max-width:100px;max-height:100px}
.placeholder{width:72px;height:72px;background:#ccc;display:flex;align-items:center;justify-content:center;color:#555;font-size:11px;text-align:center}
.score{display:block;font-weight:600} .id{display:block;color:#555;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
"""

def _image_html(item: Media | None, frames: int, label: str) -> str:
    images = thumbnail(item, frames)
    if not images:
        return f'<div class="placeholder">{html.escape(label)}</div>'
    return "".join(f'<img class="frame" alt="{html.escape(label)}" src="{data_uri(i)}">' for i in images)


def _rank_text(entry: Entry) -> str:
    if not entry.labelled:
        return "no ground truth (test split)"
    if entry.rank is None:
        return f"ground truth not in the top {entry.ranked}"
    return f"ground truth at rank {entry.rank}"


def _entry_html(entry: Entry) -> str:
    kind = "unlabelled" if not entry.labelled else "miss" if entry.miss else "hit"
    reference = _image_html(entry.reference_path, REFERENCE_FRAMES, "no reference (text query)" if entry.reference_path is None else "unreadable")
    results = "".join(
        f'<li class="result{" gt" if r.correct else ""}" data-item="{html.escape(r.item)}">{_image_html(r.path, 1, "unreadable")}'
        f'<span class="score">{r.score:.3f}</span><span class="id" title="{html.escape(r.item)}">{html.escape(r.item)}</span></li>'
        for r in entry.results
    )  # fmt: skip
    categories = " · ".join(f"{k}: {v}" for k, v in entry.categories.items())
    return (
        f'<article class="query {kind}" data-query="{html.escape(entry.query)}"><div class="reference">{reference}</div>'
        f'<div class="info"><p class="text">{html.escape(entry.text or "(no text: image query)")}</p>'
        f'<p class="rank">{html.escape(_rank_text(entry))}</p><p class="qid">query {html.escape(entry.query)} · reference '
        f'{html.escape(entry.reference or "-")}{" · " + html.escape(categories) if categories else ""}</p></div>'
        f'<ol class="results">{results}</ol></article>'
    )


def write_html(path: Path, title: str, summary: Sequence[str], tasks: Mapping[str, Sequence[Entry]]) -> Path:
    """The report page (module docstring)."""
    body = [f"<h1>{html.escape(title)}</h1>"] + [f'<p class="summary">{html.escape(line)}</p>' for line in summary]
    for name, entries in tasks.items():
        misses = sum(e.miss for e in entries)
        body.append(f'<section class="task" data-task="{html.escape(name)}"><h2>{html.escape(name)}: {len(entries)} sampled queries, {misses} misses</h2>')
        body += [_entry_html(e) for e in entries]
        body.append("</section>")
    page = f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page + "\n".join(body) + "\n</body></html>\n", encoding="utf-8")
    return path


def summary_lines(results: Mapping[str, Any], top_k: int) -> list[str]:
    """Protocol, re-scoring and headline metrics of a benchmark's results, for the page's header."""
    protocol = (results.get("protocol") or {}).get("name", "")
    metrics = "  ".join(f"{k} {v:.2f}" for k, v in (results.get("metrics") or {}).items())
    lines = [f"split {results.get('split')} · protocol {protocol} · top {top_k} shown · green: ground truth, red edge: miss"]
    if results.get("rescoring"):
        lines.append("re-scoring: " + ", ".join(sorted(results["rescoring"])))
    if metrics:
        lines.append(metrics)
    return lines


def write_report(out_dir: Path, name: str, results: Mapping[str, Any], tasks: Mapping[str, Sequence[Entry]], top_k: int) -> dict[str, str]:
    """Write <out_dir>/report/<name>.html and .png -> their paths."""
    folder = Path(out_dir) / "report"
    title = f"covr report: {name}"
    lines = summary_lines(results, top_k)
    page = write_html(folder / f"{name}.html", title, lines, tasks)
    sheet = write_contact_sheet(folder / f"{name}.png", title, lines, tasks, top_k)
    thumbnail.cache_clear()  # shared by the page and the sheet only: a later run may show changed files
    return {"html": str(page), "png": str(sheet)}
