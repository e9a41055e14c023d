"""Up-front checks of an annotation file's rows, before a dataset serves any item.

A row is dropped when its reference (or, decoding targets, its target) video is missing or empty
(test split: also when it does not open), when its target has no embedding in the store, or when
its text is unusable (covr.data.annotations). Every dropped row is listed in the split's skip
report; the test split refuses them unless ``allow_missing`` (they are the benchmark).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from covr.data.annotations import CovrAnnotations
from covr.data.embedding_store import EmbeddingStore
from covr.data.errors import MissingVideosError
from covr.data.media_check import file_problem_opening
from covr.data.skips import SkipReport

log = logging.getLogger(__name__)

REASONS = ("ok", "missing", "empty", "unreadable", "no embedding")  # index 0 = usable


def _file_problems(ann: CovrAnnotations, video_path: Callable[[str], str], codes: np.ndarray, open_file: bool) -> np.ndarray:
    """int8 [V] reason index per video code (0 = fine); only ``codes`` are checked."""
    problems = np.zeros(len(ann.video_ids), dtype=np.int8)
    ids = ann.video_ids
    with ThreadPoolExecutor(16) as pool:  # stat() latency dominates on network file systems
        found = pool.map(lambda c: file_problem_opening(video_path(ids[c]), open_file=open_file), codes.tolist(), chunksize=256)
        for code, problem in zip(codes.tolist(), found):
            problems[code] = REASONS.index(problem) if problem else 0
    return problems


def check_rows(
    ann: CovrAnnotations,
    video_path: Callable[[str], str],
    split: str,
    store: EmbeddingStore | None,
    check_files: bool = True,
    allow_missing: bool = False,
    report_dir: str | Path | None = None,
) -> tuple[np.ndarray, SkipReport]:
    """(kept CSV rows, sorted int64 [N_kept]; the report of the dropped ones, written to report_dir)."""
    report = SkipReport(split, len(ann))
    ref_problem = np.zeros(len(ann.video_ids), dtype=np.int8)
    tgt_problem = np.zeros(len(ann.video_ids), dtype=np.int8)
    if check_files:
        open_file = split == "test"  # test files must open: a bad one fails before any encoding
        ref_problem = _file_problems(ann, video_path, np.unique(ann.reference), open_file)
        if store is None:
            tgt_problem = _file_problems(ann, video_path, np.unique(ann.target), open_file)
    if store is not None:
        stored = np.array([video_id in store for video_id in ann.video_ids], dtype=bool)
        tgt_problem = np.where(stored, tgt_problem, REASONS.index("no embedding")).astype(np.int8)
    row_ref, row_tgt = ref_problem[ann.reference], tgt_problem[ann.target]
    bad_text = np.zeros(len(ann), dtype=bool)
    bad_text[list(ann.bad_rows)] = True
    bad = np.flatnonzero((row_ref > 0) | (row_tgt > 0) | bad_text)
    for row in bad.tolist():
        if row in ann.bad_rows:
            field, reason = ann.bad_rows[row]
            report.add(row, ann.reference_id(row), field, reason)
        elif row_ref[row]:
            report.add(row, ann.reference_id(row), "pth1", REASONS[row_ref[row]])
        else:
            report.add(row, ann.target_id(row), "pth2", REASONS[row_tgt[row]])
    if report.entries and split == "test" and not allow_missing:
        ids = list(dict.fromkeys(video_id for _, video_id, _, _ in report.entries))
        raise MissingVideosError(
            f"{ann.path}: {len(report):,} of {len(ann):,} test rows lack a usable video, embedding or text "
            f"({len(ids):,} ids, e.g. {', '.join(ids[:5])}; {dict(report.counts())}); "
            "the gallery would be incomplete: restore them or pass allow_missing=True to evaluate on the rest"
        )
    path = report.write(report_dir)
    (log.warning if report.entries else log.info)(report.summary(path))
    return np.setdiff1d(np.arange(len(ann), dtype=np.int64), bad), report
