"""The report's PNG contact sheet: one row per sampled query (reference frames, text, top-k
thumbnails with scores; the ground truth framed green, a miss marked by a red bar), drawn with
Pillow only, so it needs no browser."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from covr.eval.report_entries import REFERENCE_FRAMES, THUMB, Entry, thumbnail

CELL = 96  # thumbnail cell of a result, pixels
REF_CELL = 64  # cell of each reference frame (a video shows up to REFERENCE_FRAMES of them)
REF_WIDTH = REFERENCE_FRAMES * (REF_CELL + 2)
TEXT_WIDTH = 230
PAD = 6
GREEN, RED, GREY, INK = (46, 125, 50), (198, 40, 40), (160, 160, 160), (34, 34, 34)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def _paste(canvas: Image.Image, image: Image.Image | None, x: int, y: int, cell: int = CELL) -> None:
    """A thumbnail fitted into a `cell` box at (x, y), centred; a grey box when there is none."""
    if image is None:
        ImageDraw.Draw(canvas).rectangle([x, y, x + cell - 1, y + cell - 1], fill=(204, 204, 204))
        return
    image = image.copy()
    image.thumbnail((cell, cell))
    canvas.paste(image, (x + (cell - image.width) // 2, y + (cell - image.height) // 2))


def _row(canvas: Image.Image, entry: Entry, y: int, top_k: int, font: ImageFont.ImageFont) -> None:
    draw = ImageDraw.Draw(canvas)
    colour = GREY if not entry.labelled else RED if entry.miss else GREEN
    draw.rectangle([0, y, 4, y + CELL + 18], fill=colour)
    x = PAD + 6
    references = thumbnail(entry.reference_path, REFERENCE_FRAMES, THUMB) or (None,)  # a grey box: no / unreadable reference
    for i, image in enumerate(references):
        _paste(canvas, image, x + i * (REF_CELL + 2), y + (CELL - REF_CELL) // 2, REF_CELL)
    x += REF_WIDTH + PAD
    lines = textwrap.wrap(entry.text or "(no text: image query)", 34)[:5]
    rank = "no ground truth" if not entry.labelled else f"rank {entry.rank}" if entry.rank else f"not in top {entry.ranked}"
    draw.multiline_text((x, y), "\n".join(lines + [f"[{entry.query}] {rank}"]), fill=INK, font=font, spacing=3)
    x += TEXT_WIDTH
    for r in entry.results[:top_k]:
        images = thumbnail(r.path, 1, THUMB)
        _paste(canvas, images[0] if images else None, x, y)
        if r.correct:
            draw.rectangle([x - 3, y - 3, x + CELL + 2, y + CELL + 2], outline=GREEN, width=3)
        draw.text((x, y + CELL + 3), f"{r.score:.3f}", fill=GREEN if r.correct else INK, font=font)
        x += CELL + PAD


def write_contact_sheet(path: Path, title: str, summary: Sequence[str], tasks: Mapping[str, Sequence[Entry]], top_k: int) -> Path:
    """Draw every task's entries under a title -> the PNG's path."""
    font, big = _font(12), _font(16)
    header = 28 + 16 * len(summary)
    row_height, task_header = CELL + 26, 22
    rows = sum(len(e) for e in tasks.values())
    width = PAD + 6 + REF_WIDTH + PAD + TEXT_WIDTH + top_k * (CELL + PAD) + PAD
    height = header + len(tasks) * task_header + rows * row_height + PAD
    canvas = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    draw.text((PAD, 6), title, fill=INK, font=big)
    for i, line in enumerate(summary):
        draw.text((PAD, 28 + 16 * i), line, fill=(85, 85, 85), font=font)
    y = header
    for name, entries in tasks.items():
        draw.text((PAD, y + 4), f"{name}: {len(entries)} sampled queries, {sum(e.miss for e in entries)} misses", fill=INK, font=font)
        y += task_header
        for entry in entries:
            _row(canvas, entry, y + 3, top_k, font)
            y += row_height
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    return path
