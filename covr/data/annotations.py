"""Reader for WebVid-CoVR annotation CSVs (official column names).

Columns: pth1, pth2, txt1, txt2, edit, scores, sim_txt, sim_vid, person-prob; only pth1, pth2 and
edit are required. The train CSV has ~1.6M rows over ~131k videos, so ids are interned into one
vocabulary with int32 codes, captions are interned (each video's caption repeats on many rows),
and ``scores`` stays a raw string until an item asks for it. Strings live in ``StringColumn``s
(one utf-8 buffer + offsets): no per-row Python objects, so DataLoader workers forked from the
main process share the pages instead of copying them as reference counts change.

Bad rows do not abort the read: a row with bytes that are not UTF-8, an edit with no words, or a
``scores`` list that does not parse or holds non-finite numbers is recorded in
``CovrAnnotations.bad_rows`` (row -> (field, reason)); the dataset skips, counts and lists them
with the rows whose videos are missing. (Replacing invalid bytes instead would train on text
nobody wrote; a Latin-1 file shows up as many skipped rows, with the first line named.)
"""

from __future__ import annotations

import ast
import csv
import logging
import math
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from covr.data.errors import AnnotationError

log = logging.getLogger(__name__)
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
    bad_rows: dict[int, tuple[str, str]] = field(default_factory=dict)  # row -> (column, reason): rows to skip

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


def _score_values(text: object) -> list[float] | None:
    """'[0.31, 0.29, ...]' -> [0.31, 0.29, ...]; None when absent or empty; ValueError when malformed
    or when a value is not finite."""
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
            values = [float(v) for v in ast.literal_eval(body)]
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(f"not a list of numbers: {body[:60]!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"non-finite value in {body[:60]!r}")
    return values or None


def parse_scores(text: object) -> np.ndarray | None:
    """'[0.31, 0.29, ...]' -> float32 [F]; None when absent, empty or malformed (callers fall back to
    uniform weights; the dataset has already skipped rows whose scores are malformed)."""
    try:
        values = _score_values(text)
    except ValueError:
        return None
    return None if values is None else np.asarray(values, dtype=np.float32)


def score_problem(text: object) -> str | None:
    """"bad scores" when a scores entry is malformed or not finite; None when fine or absent."""
    try:
        _score_values(text)
    except ValueError:
        return "bad scores"
    return None


_EDIT_NOISE = " \t\r\n.!\"()*#:;~,?'-"  # what text cleaning removes or what carries no word


_SCORE_BYTES = np.zeros(256, dtype=bool)
_SCORE_BYTES[list(b"0123456789.,+-eE []")] = True


def suspicious_scores(scores: StringColumn) -> np.ndarray:
    """Rows whose scores text is not a plain bracketed list of digits (a letter as in nan / inf /
    a word, a missing bracket, ...): the only rows worth parsing up front. One numpy pass over the
    column (1.6M rows in well under a second, where parsing every list takes ~10 s per rank).
    What passes yet does not parse ('1..2') is caught again, with a warning, when an item is made."""
    buffer, offsets = scores.buffer, scores.offsets
    odd_bytes = np.flatnonzero(~_SCORE_BYTES[buffer])
    rows = np.searchsorted(offsets, odd_bytes, side="right") - 1
    filled = np.flatnonzero(np.diff(offsets) > 0)
    unbracketed = filled[(buffer[offsets[filled]] != ord("[")) | (buffer[offsets[filled + 1] - 1] != ord("]"))]
    return np.union1d(rows, unbracketed).astype(np.int64)


def _has_invalid_bytes(text: str) -> bool:
    """True when `text` holds bytes that were not UTF-8 (read with errors="surrogateescape")."""
    return not text.isascii() and any("\udc80" <= ch <= "\udcff" for ch in text)


def _repaired(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_webvid_covr_csv(path: str | Path) -> CovrAnnotations:
    """Read an annotation CSV; a missing required column or a bad row raises AnnotationError naming it."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} does not exist")
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
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
        bad_rows: dict[int, tuple[str, str]] = {}
        used = [i for i in (i_ref, i_tgt, i_edit, i_txt1, i_txt2, i_scores) if i is not None]
        for fields in _rows(reader, path):
            row = len(reference)  # data-row index, blank lines not counted (as pandas does)
            if len(fields) < width:
                if not fields:  # blank line (e.g. trailing newline twice)
                    continue
                raise AnnotationError(f"{path}: row {row} (line {reader.line_num}) has {len(fields)} fields, the header has {len(header)}")
            invalid = [] if all(map(str.isascii, fields)) else [header[i] for i in used if _has_invalid_bytes(fields[i])]
            if invalid:
                if not any(reason == "invalid utf-8" for _, reason in bad_rows.values()):
                    log.warning("%s: line %d (row %d) has bytes that are not UTF-8 in %s; such rows are skipped", path, reader.line_num, row, ", ".join(invalid))
                bad_rows[row] = (invalid[0], "invalid utf-8")
                fields = [_repaired(value) for value in fields]
            ref_id, tgt_id = fields[i_ref].strip(), fields[i_tgt].strip()
            if not ref_id or not tgt_id:
                field_name = "pth1" if not ref_id else "pth2"
                raise AnnotationError(f"{path}: row {row} (line {reader.line_num}) has an empty {field_name}")
            if row not in bad_rows and not fields[i_edit].strip(_EDIT_NOISE):
                bad_rows[row] = ("edit", "empty edit")
            reference.append(codes.setdefault(ref_id, len(codes)))
            target.append(codes.setdefault(tgt_id, len(codes)))
            edit.append(fields[i_edit])
            if i_txt1 is not None:
                txt1.append(captions.setdefault(fields[i_txt1], len(captions)))
            if i_txt2 is not None:
                txt2.append(captions.setdefault(fields[i_txt2], len(captions)))
            if i_scores is not None:
                scores.append(fields[i_scores])

    scores_column = scores.freeze() if i_scores is not None else None
    if scores_column is not None:
        for row in suspicious_scores(scores_column):
            if row not in bad_rows and score_problem(scores_column[row]):
                bad_rows[row] = ("scores", "bad scores")
        bad_rows = dict(sorted(bad_rows.items()))

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
        scores=scores_column,
        bad_rows=bad_rows,
    )


def _rows(reader, path: Path):
    """The CSV reader's rows; a structural error (NUL byte, runaway quote) names the line."""
    try:
        yield from reader
    except csv.Error as err:
        raise AnnotationError(f"{path}: line {reader.line_num} is not valid CSV ({err})") from None
