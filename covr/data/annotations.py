"""Reader for WebVid-CoVR annotation CSVs (official column names).

Columns: pth1, pth2, txt1, txt2, edit, scores, sim_txt, sim_vid, person-prob; only pth1, pth2 and
edit are required. The train CSV has ~1.6M rows over ~131k videos, so ids are interned into one
vocabulary with int32 codes, captions are interned (each video's caption repeats on many rows),
and ``scores`` stays a raw string until an item asks for it. Strings live in ``StringColumn``s
(one utf-8 buffer + offsets): no per-row Python objects, so DataLoader workers forked from the
main process share the pages instead of copying them as reference counts change.
"""

from __future__ import annotations

import ast
import csv
import math
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covr.data.errors import AnnotationError

REQUIRED_COLUMNS = ("pth1", "pth2", "edit")
OPTIONAL_COLUMNS = ("txt1", "txt2", "scores")


class StringColumn:
    """Append-only list of strings stored as one utf-8 buffer + offsets [N + 1]; freeze() makes it numpy."""

    def __init__(self, strings: list[str] | None = None) -> None:
        self._buffer = bytearray()
        self._ends = array("q")
        self.buffer: np.ndarray | None = None
        self.offsets: np.ndarray | None = None
        for text in strings or ():
            self.append(text)
        if strings is not None:
            self.freeze()

    def append(self, text: str) -> None:
        self._buffer += text.encode("utf-8")
        self._ends.append(len(self._buffer))

    def freeze(self) -> StringColumn:
        """Move the data into numpy arrays: uint8 [total_bytes] and int64 offsets [N + 1]."""
        self.buffer = np.frombuffer(bytes(self._buffer), dtype=np.uint8)
        self.offsets = np.concatenate([[0], np.frombuffer(self._ends, dtype=np.int64)]).astype(np.int64)
        self._buffer, self._ends = bytearray(), array("q")
        return self

    def __len__(self) -> int:
        return len(self.offsets) - 1 if self.offsets is not None else len(self._ends)

    def __getitem__(self, index: int) -> str:
        start, stop = self.offsets[index], self.offsets[index + 1]
        return self.buffer[start:stop].tobytes().decode("utf-8")


@dataclass
class CovrAnnotations:
    """Column store of one CSV; row i is the triplet (reference[i], edit[i], target[i])."""

    path: str
    video_ids: list[str]  # vocabulary of every pth1 / pth2 id (~131k for the train CSV)
    reference: np.ndarray  # int32 [N] codes into video_ids (pth1)
    target: np.ndarray  # int32 [N] codes into video_ids (pth2)
    edit: StringColumn  # raw modification texts [N]
    captions: StringColumn | None  # distinct raw captions; None when neither txt1 nor txt2 exists
    reference_caption: np.ndarray | None  # int32 [N] codes into captions (txt1), None when absent
    target_caption: np.ndarray | None  # int32 [N] codes into captions (txt2)
    scores: StringColumn | None  # raw per-frame score strings [N], parsed on demand by parse_scores

    def __len__(self) -> int:
        return len(self.edit)

    def reference_id(self, row: int) -> str:
        return self.video_ids[self.reference[row]]

    def target_id(self, row: int) -> str:
        return self.video_ids[self.target[row]]

    def caption(self, row: int, which: str) -> str:
        """Raw txt1 ("reference") or txt2 ("target") of a row; "" when the column is absent."""
        codes = self.reference_caption if which == "reference" else self.target_caption
        return "" if codes is None else self.captions[codes[row]]


def parse_scores(text: object) -> np.ndarray | None:
    """'[0.31, 0.29, ...]' -> float32 [F]; None when absent or malformed (callers fall back to uniform)."""
    if not isinstance(text, str) or not text.strip():
        return None
    body = text.strip()
    try:  # fast path: a flat list of numbers
        if not (body.startswith("[") and body.endswith("]")):
            raise ValueError
        inner = body[1:-1].strip()
        values = [float(v) for v in inner.split(",")] if inner else []
    except ValueError:
        try:  # Python-literal corner cases (nested tuples, ints, trailing commas)
            values = ast.literal_eval(body)
            values = [float(v) for v in values]
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    if not values or not all(math.isfinite(v) for v in values):
        return None
    return np.asarray(values, dtype=np.float32)


def read_webvid_covr_csv(path: str | Path) -> CovrAnnotations:
    """Read an annotation CSV; a missing required column or a bad row raises AnnotationError naming it."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} does not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise AnnotationError(f"{path}: empty file, expected a header with columns {', '.join(REQUIRED_COLUMNS)}") from None
        missing = [name for name in REQUIRED_COLUMNS if name not in header]
        if missing:
            raise AnnotationError(
                f"{path}: missing required column(s) {', '.join(missing)}; header has {', '.join(header) or 'nothing'}"
            )
        col = {name: header.index(name) for name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if name in header}
        i_ref, i_tgt, i_edit = col["pth1"], col["pth2"], col["edit"]
        i_txt1, i_txt2, i_scores = col.get("txt1"), col.get("txt2"), col.get("scores")
        width = max(col.values()) + 1

        codes: dict[str, int] = {}
        captions: dict[str, int] = {}
        reference, target, txt1, txt2 = array("i"), array("i"), array("i"), array("i")
        edit, scores = StringColumn(), StringColumn()
        for fields in reader:
            row = len(reference)  # data-row index, blank lines not counted (as pandas does)
            if len(fields) < width:
                if not fields:  # blank line (e.g. trailing newline twice)
                    continue
                raise AnnotationError(f"{path}: row {row} (line {reader.line_num}) has {len(fields)} fields, the header has {len(header)}")
            ref_id, tgt_id = fields[i_ref].strip(), fields[i_tgt].strip()
            if not ref_id or not tgt_id:
                field = "pth1" if not ref_id else "pth2"
                raise AnnotationError(f"{path}: row {row} (line {reader.line_num}) has an empty {field}")
            reference.append(codes.setdefault(ref_id, len(codes)))
            target.append(codes.setdefault(tgt_id, len(codes)))
            edit.append(fields[i_edit])
            if i_txt1 is not None:
                txt1.append(captions.setdefault(fields[i_txt1], len(captions)))
            if i_txt2 is not None:
                txt2.append(captions.setdefault(fields[i_txt2], len(captions)))
            if i_scores is not None:
                scores.append(fields[i_scores])

    def as_codes(values: array, present: bool) -> np.ndarray | None:
        return np.frombuffer(values, dtype=np.int32).copy() if present else None

    return CovrAnnotations(
        path=str(path),
        video_ids=list(codes),
        reference=as_codes(reference, True),
        target=as_codes(target, True),
        edit=edit.freeze(),
        captions=StringColumn(list(captions)) if captions or i_txt1 is not None or i_txt2 is not None else None,
        reference_caption=as_codes(txt1, i_txt1 is not None),
        target_caption=as_codes(txt2, i_txt2 is not None),
        scores=scores.freeze() if i_scores is not None else None,
    )
