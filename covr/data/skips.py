"""Bookkeeping of annotation rows dropped because their video (or embedding) is unusable.

Rows skipped up front are collected by ``SkipReport`` and written at once; rows that fail later,
at decode time inside DataLoader workers, are appended line by line to the same file
(``append_skip``): one short O_APPEND write per line, safe across worker processes.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from pathlib import Path

log = logging.getLogger(__name__)

REPORT_COLUMNS = ("row", "id", "field", "reason")


def report_path(report_dir: str | Path | None, split: str) -> Path | None:
    """``<report_dir>/skipped_<split>.csv`` or None when no report folder is configured."""
    return None if report_dir is None else Path(report_dir) / f"skipped_{split}.csv"


def _csv_line(values: tuple) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


class SkipReport:
    """Skipped rows of one split: (row, video id, field pth1/pth2, reason keyword)."""

    def __init__(self, split: str, total_rows: int) -> None:
        self.split = split
        self.total_rows = total_rows
        self.entries: list[tuple[int, str, str, str]] = []

    def add(self, row: int, video_id: str, field: str, reason: str) -> None:
        self.entries.append((int(row), video_id, field, reason))

    def __len__(self) -> int:
        return len(self.entries)

    def counts(self) -> Counter:
        return Counter(reason for *_, reason in self.entries)

    def write(self, report_dir: str | Path | None) -> Path | None:
        """Write the report (header even when empty, so decode-time skips can be appended)."""
        path = report_path(report_dir, self.split)
        if path is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # several ranks may write the same file
        with open(tmp, "w", newline="") as handle:
            handle.write(_csv_line(REPORT_COLUMNS))
            for entry in self.entries:
                handle.write(_csv_line(entry))
        os.replace(tmp, path)
        return path

    def summary(self, path: Path | None) -> str:
        """'skipped 12 of 1,600 train rows: 10 missing, 2 empty; list in runs/x/skipped_train.csv'."""
        counts = ", ".join(f"{n:,} {reason}" for reason, n in sorted(self.counts().items()))
        where = f"list in {path}" if path is not None else "no report_dir given, no list written"
        head = f"skipped {len(self):,} of {self.total_rows:,} {self.split} rows"
        return f"{head}: {counts}; {where}" if self.entries else f"{head}"


def append_skip(report_dir: str | Path | None, split: str, row: int, video_id: str, field: str, reason: str) -> None:
    """Record one decode-time skip in the split's report (no-op without a report folder)."""
    path = report_path(report_dir, split)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    line = (_csv_line(REPORT_COLUMNS) if new else "") + _csv_line((row, video_id, field, reason))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
