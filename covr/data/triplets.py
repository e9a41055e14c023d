"""Corrective triplets (ReCALL, arXiv 2602.01639): extra training rows (reference video, new
modification text, target video), typically an MLLM's corrected text for a negative mined from the
retriever (covr-mine-negatives, then covr-correct-triplets or any other tool), read from JSONL:

    {"reference": "<pth1 id>", "edit": "<text true for the target>", "target": "<video id>",
     "verified": true, ...}                      one object per line; other fields are kept out

`reference` must be a reference (pth1) and `target` a target (pth2) of the train CSV: the new row
takes the reference's caption (txt1) and the target's caption (txt2) and frame scores from their
first rows there, so the caption term, the embedding store and the frame weights need nothing new.
A line with "verified": false (its yes/no checks failed) is skipped and counted. The rows are
appended after the CSV's, so CSV rows keep their numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from covr.data.annotations import CovrAnnotations, StringColumn
from covr.data.errors import AnnotationError
from covr.data.jsonl import read_jsonl

log = logging.getLogger(__name__)
FIELDS = ("reference", "edit", "target")


def read_triplets(path: str | Path) -> tuple[list[dict[str, str]], int]:
    """(triplets, lines skipped as unverified) of a corrective-triplet JSONL file; a bad line raises
    AnnotationError naming the file, line and field."""
    triplets, unverified = [], 0
    for number, record in read_jsonl(path, "corrective triplets file"):
        for field in FIELDS:
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise AnnotationError(f"{path}: line {number}: field {field!r} is missing or not a non-empty string")
        if record.get("verified") is False:
            unverified += 1
            continue
        triplets.append({field: record[field].strip() for field in FIELDS} | {"line": number})
    return triplets, unverified


def _extended(column: StringColumn, texts: list[str]) -> StringColumn:
    """A frozen column holding `column`'s strings followed by `texts` (buffers joined, nothing re-encoded)."""
    encoded = [t.encode("utf-8") for t in texts]
    out = StringColumn()
    out.buffer = np.concatenate([column.buffer, np.frombuffer(b"".join(encoded), dtype=np.uint8)])
    ends = column.offsets[-1] + np.cumsum([len(e) for e in encoded], dtype=np.int64)
    out.offsets = np.concatenate([column.offsets, ends]).astype(np.int64)
    return out


def with_corrective_triplets(annotations: CovrAnnotations, path: str | Path | None) -> CovrAnnotations:
    """`annotations` with the triplets of `path` appended as rows (unchanged when `path` is None)."""
    if path is None:
        return annotations
    triplets, unverified = read_triplets(path)
    code = {video: i for i, video in enumerate(annotations.video_ids)}
    first_as_reference = {int(c): row for row, c in reversed(list(enumerate(annotations.reference)))}
    first_as_target = {int(c): row for row, c in reversed(list(enumerate(annotations.target)))}
    references, targets, source_ref, source_tgt = [], [], [], []
    for t in triplets:
        ref, tgt = code.get(t["reference"]), code.get(t["target"])
        if ref is None or ref not in first_as_reference:
            raise AnnotationError(f"{path}: line {t['line']}: reference {t['reference']!r} is not a reference (pth1) of {annotations.path}")
        if tgt is None or tgt not in first_as_target:
            raise AnnotationError(f"{path}: line {t['line']}: target {t['target']!r} is not a target (pth2) of {annotations.path}")
        references.append(ref)
        targets.append(tgt)
        source_ref.append(first_as_reference[ref])
        source_tgt.append(first_as_target[tgt])

    def codes(values: np.ndarray | None, rows: list[int]) -> np.ndarray | None:
        return None if values is None else np.concatenate([values, values[rows].astype(np.int32)])

    merged = CovrAnnotations(
        path=annotations.path,
        video_ids=annotations.video_ids,
        reference=np.concatenate([annotations.reference, np.asarray(references, dtype=np.int32)]),
        target=np.concatenate([annotations.target, np.asarray(targets, dtype=np.int32)]),
        edit=_extended(annotations.edit, [t["edit"] for t in triplets]),
        captions=annotations.captions,
        reference_caption=codes(annotations.reference_caption, source_ref),
        target_caption=codes(annotations.target_caption, source_tgt),
        scores=None if annotations.scores is None else _extended(annotations.scores, [annotations.scores[r] for r in source_tgt]),
        bad_rows=dict(annotations.bad_rows),
    )
    log.info("%s: %d corrective triplets added to %s (%d unverified lines skipped)", path, len(triplets), annotations.path, unverified)
    return merged
