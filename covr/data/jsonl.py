"""Reading JSONL files a user hands us (annotations, constraints, captions, mined negatives, triplets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from covr.data.errors import AnnotationError


def read_jsonl(path: str | Path, what: str = "file") -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line. A missing file, or a line that is not UTF-8,
    not JSON or not a JSON object, raises AnnotationError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: {what} not found")
    entries = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise AnnotationError(f"{path}: line {number}: not UTF-8 text ({error.reason} at byte {error.start})") from None
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise AnnotationError(f"{path}: line {number}: not valid JSON ({error.msg}): {line.strip()[:200]}") from None
            if not isinstance(entry, dict):
                raise AnnotationError(f"{path}: line {number}: expected a JSON object, got {line.strip()[:200]}")
            entries.append((number, entry))
    return entries
