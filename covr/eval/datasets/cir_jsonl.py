"""The generic composed retrieval annotation file (JSON Lines), for images or videos: EDIR-style
sets, FineCVR-1M or any other set converted to it (README "Any other composed video set";
covr/tools/finecvr_to_jsonl.py is a converter example).

One JSON object per line:
  {"reference": "<item id>", "text": "<modification>",
   "target": "<item id>"  and/or  "ground_truths": ["<item id>", ...],
   "id": "...", "caption": "...", "category": "...", "subcategory": "..."}   (last four optional)
A query without "reference" is a text-to-image query, one without "text" an image-to-image query
(MMLandmarks-style retrieval sets; README "Text-to-image and image-to-image sets").
An item is `<media_root>/<id><extension>` (an image or a video), unless `media_file` maps its id
to another path relative to media_root: a file, a folder of frame images, or a time span
{"path": ..., "start": s, "end": s} of a video. The gallery is the ids in `gallery_file` (one per
line, or a JSON list) or, without one, the union of every query's targets and ground truths.
Every metric is also reported per value of each field in `category_fields`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from covr.data.jsonl import read_jsonl
from covr.eval.datasets.base import (
    AnnotationError,
    Benchmark,
    GalleryFiles,
    Protocol,
    Query,
    RetrievalTask,
    expect,
    read_json,
    single_task_summary,
)
from covr.eval.media import Clip, Media


def _read_gallery_ids(path: Path) -> list[str]:
    if path.suffix == ".json":
        ids = read_json(path)
        valid = isinstance(ids, list) and all(isinstance(i, str) for i in ids)
        expect(valid, path, "top level", "[...]", "expected a list of ids")
        return ids
    if not path.is_file():
        raise AnnotationError(f"{path}: gallery list not found")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _parse_entry(entry: dict, where: str, path: Path, category_fields: Sequence[str]) -> dict:
    expect(isinstance(entry, dict), path, where, entry, "expected a JSON object")
    for key in ("reference", "text"):  # either may be absent: a text-to-image or an image-to-image query
        expect(entry.get(key) is None or isinstance(entry[key], str), path, where, entry, f"{key!r} must be a string")
    expect(bool(entry.get("reference")) or bool(entry.get("text")), path, where, entry, "needs a 'reference', a 'text' or both")
    target = entry.get("target")
    gts = entry.get("ground_truths")
    expect(target is not None or gts is not None, path, where, entry, "needs 'target' or 'ground_truths'")
    expect(target is None or isinstance(target, str), path, where, entry, "'target' must be a string")
    valid = gts is None or (isinstance(gts, list) and gts and all(isinstance(g, str) for g in gts))
    expect(valid, path, where, entry, "'ground_truths' must be a non-empty list of strings")
    caption = entry.get("caption")
    expect(caption is None or isinstance(caption, str), path, where, entry, "'caption' must be a string")
    categories = {}
    for key in category_fields:
        if entry.get(key) is not None:
            expect(isinstance(entry[key], str), path, where, entry, f"{key!r} must be a string")
            categories[key] = entry[key]
    target = target if target is not None else gts[0]
    return {"target": target, "gts": tuple(dict.fromkeys(gts or ())), "categories": categories}


def _read_media_file(path: Path, root: Path) -> dict[str, Media]:
    """{id: item} from a JSON object {id: path | {"path", "start", "end"}} or JSONL {"id", "path", ...} lines."""
    entries = list(read_json(path).items()) if path.suffix == ".json" else [(e.get("id"), e) for _, e in read_jsonl(path, "annotation file")]
    media: dict[str, Media] = {}
    for n, (key, value) in enumerate(entries):
        where = f"entry {n + 1} ({key})"
        expect(isinstance(key, str) and key != "", path, where, value, "needs a string id")
        if isinstance(value, dict) and ("start" in value or "end" in value):
            spans = all(isinstance(value.get(f), (int, float)) for f in ("start", "end"))
            expect(spans and isinstance(value.get("path"), str), path, where, value, "a span needs 'path', 'start' and 'end'")
            try:
                media[key] = Clip(root / value["path"], float(value["start"]), float(value["end"]))
            except ValueError as error:
                raise AnnotationError(f"{path}: {where}: {error}") from None
            continue
        relative = value.get("path") if isinstance(value, dict) else value
        expect(isinstance(relative, str) and relative != "", path, where, value, "needs a path")
        media[key] = root / relative
    return media


def load_cir_jsonl(
    annotation: str | Path,
    image_root: str | Path | None = None,
    gallery_file: str | Path | None = None,
    image_extension: str = "",
    exclude_reference: bool = True,
    category_fields: Sequence[str] = ("category", "subcategory"),
    name: str = "cir_jsonl",
    split: str = "test",
    media_root: str | Path | None = None,
    media_file: str | Path | None = None,
    recall_of: Literal["target", "any"] = "target",
) -> Benchmark:
    """Read a generic JSONL annotation file (see module docstring); `media_root` is `image_root`'s
    other name, `recall_of: any` counts an R@K hit for any ground truth (several correct targets)."""
    if (image_root is None) == (media_root is None):
        raise ValueError("the JSONL reader needs exactly one of media_root / image_root")
    if recall_of not in ("target", "any"):
        raise ValueError(f"recall_of must be 'target' or 'any', got {recall_of!r}")
    annotation, image_root = Path(annotation), Path(media_root if media_root is not None else image_root)
    mapped = _read_media_file(Path(media_file), image_root) if media_file is not None else {}

    def item(item_id: str) -> Media:
        return mapped.get(item_id, image_root / f"{item_id}{image_extension}")
    queries, union, has_gts, seen = [], {}, False, set()
    for line_number, entry in read_jsonl(annotation, "annotation file"):
        where = f"line {line_number}"
        parsed = _parse_entry(entry, where, annotation, category_fields)
        query_id = str(entry.get("id", line_number))
        expect(query_id not in seen, annotation, where, entry, f"duplicate id {query_id}")
        seen.add(query_id)
        has_gts |= bool(parsed["gts"])
        for image in (parsed["target"], *parsed["gts"]):
            union.setdefault(image, None)
        reference, text = entry.get("reference") or "", entry.get("text") or ""
        queries.append(
            Query(
                id=query_id,
                reference=reference,
                reference_path=item(reference) if reference else None,
                text=text,
                caption=entry.get("caption"),
                target=parsed["target"],
                ground_truths=parsed["gts"],
                exclude=(reference,) if exclude_reference and reference else (),
                categories=parsed["categories"],
                modality="composed" if reference and text else "image" if reference else "text",
            )
        )
    if not queries:
        raise AnnotationError(f"{annotation}: no queries")
    ids = _read_gallery_ids(Path(gallery_file)) if gallery_file is not None else list(union)
    gallery = GalleryFiles(ids, [item(i) for i in ids])
    return Benchmark(
        name=name,
        split=split,
        tasks=[RetrievalTask(f"{name}/{split}", queries, gallery)],
        protocol=Protocol(recall_ks=(1, 5, 10, 50), map_ks=(5, 10, 25, 50) if has_gts else (), recall_of=recall_of),
        summarise=single_task_summary(),
        options={
            "exclude_reference": exclude_reference, "gallery": "file" if gallery_file else "union of targets",
            "media_file": str(media_file) if media_file is not None else None, "recall_of": recall_of,
        },  # fmt: skip
    )
