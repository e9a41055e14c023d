"""Captions of query images from a file (CIR sets have none; any captioner can produce one).

Accepted formats:
  JSON   {"<reference id>": "<caption>", ...}
  JSONL  one {"id": "<reference id>", "caption": "<caption>"} per line ("reference" or "image"
         may name the id instead of "id")
A reference is looked up by its id, then by its file name, then by its file stem.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from covr.data.errors import AnnotationError
from covr.data.jsonl import read_jsonl
from covr.eval.datasets.base import Query, read_json

ID_KEYS = ("id", "reference", "image")


def read_caption_file(path: str | Path) -> dict[str, str]:
    """{reference id: caption} from a JSON or JSONL caption file."""
    path = Path(path)
    if path.suffix == ".jsonl":
        captions = {}
        for n, entry in read_jsonl(path, "caption file"):
            key = next((entry[k] for k in ID_KEYS if k in entry), None)
            if key is None or not isinstance(entry.get("caption"), str):
                raise AnnotationError(f"{path}: line {n}: expected {{'id': ..., 'caption': str}}: {json.dumps(entry)[:200]}")
            captions[str(key)] = entry["caption"]
        return captions
    data = read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object {{reference id: caption}}")
    for key, caption in data.items():
        if not isinstance(caption, str):
            raise AnnotationError(f"{path}: caption of {key!r} is not a string: {caption!r}")
    return {str(k): v for k, v in data.items()}


def query_captions(queries: Sequence[Query], caption_file: str | Path | None) -> list[str] | None:
    """Per-query captions: from `caption_file` when given, else the annotation's own (empty if absent).

    Returns None when no caption exists anywhere, so the model gets no caption input at all.
    A caption file that lacks a query's reference is an error naming it.
    """
    if caption_file is None:
        if all(q.caption is None for q in queries):
            return None
        return [q.caption or "" for q in queries]
    table = read_caption_file(caption_file)
    captions = []
    for q in queries:
        if q.reference_path is None:  # a text-only query has no reference to caption
            captions.append("")
            continue
        path = Path(q.reference_path)
        key = next((k for k in (q.reference, path.name, path.stem) if k in table), None)
        if key is None:
            raise AnnotationError(f"{caption_file}: no caption for reference {q.reference!r} (query {q.id})")
        captions.append(table[key])
    return captions
