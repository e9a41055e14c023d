"""Bookkeeping of annotation rows skipped because their video, embedding or text is unusable.

``<report_dir>/skipped_<split>.csv`` lists every skipped row once per run: rows found bad up front
(``SkipReport``: missing / empty videos, bad text) and rows whose video failed to decode while
training (``append_skip``, from DataLoader workers of every rank). All writers take one lock file,
so appends from many processes and the up-front rewrite never lose each other's lines, and a
row already listed is not listed again (a corrupt video met again next epoch, or after a resume).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

REPORT_COLUMNS = ("row", "id", "field", "reason")
DECODE_REASON = "unreadable"  # what decode-time failures are recorded as

Entry = tuple[int, str, str, str]  # (row, video id, field, reason)


def report_path(report_dir: str | Path | None, split: str) -> Path | None:
    """``<report_dir>/skipped_<split>.csv`` or None when no report folder is configured."""
    return None if report_dir is None else Path(report_dir) / f"skipped_{split}.csv"


def _csv_line(values: tuple) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock shared by every process writing `path` (a lock file beside it: the report
    itself is replaced by rewrites, so locking its own inode would not exclude appenders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_entries(path: Path | None) -> list[Entry]:
    """The entries of a report file ([] when absent or unreadable)."""
    if path is None or not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            rows = list(csv.DictReader(handle))
        return [(int(r["row"]), r["id"], r["field"], r["reason"]) for r in rows if r.get("row", "").isdigit()]
    except (OSError, csv.Error, KeyError, ValueError, TypeError):
        return []


class SkipReport:
    """Skipped rows of one split: (row, video id, field pth1/pth2/edit/scores, reason keyword)."""

    def __init__(self, split: str, total_rows: int) -> None:
        self.split = split
        self.total_rows = total_rows
        self.entries: list[Entry] = []

    def add(self, row: int, video_id: str, field: str, reason: str) -> None:
        self.entries.append((int(row), video_id, field, reason))

    def __len__(self) -> int:
        return len(self.entries)

    def counts(self) -> Counter:
        return Counter(reason for *_, reason in self.entries)

    def write(self, report_dir: str | Path | None) -> Path | None:
        """Write the report (header even when empty). Decode-time entries already in the file (an
        earlier attempt of this run, before a resume) are kept and counted in this report."""
        path = report_path(report_dir, self.split)
        if path is None:
            return None
        with _locked(path):
            listed = {entry[0] for entry in self.entries}
            earlier = [e for e in read_entries(path) if e[3] == DECODE_REASON and e[0] not in listed]
            self.entries += earlier
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                handle.write(_csv_line(REPORT_COLUMNS))
                for entry in self.entries:
                    handle.write(_csv_line(entry))
            os.replace(tmp, path)
        return path

    def summary(self, path: Path | None) -> str:
        """'skipped 12 of 1,600 train rows: 10 missing, 2 empty; list in runs/x/skipped_train.csv'."""
        return summarise(self.entries, self.split, self.total_rows, path)


def summarise(entries: list[Entry], split: str, total_rows: int, path: Path | None) -> str:
    counts = Counter(reason for *_, reason in entries)
    listed = ", ".join(f"{n:,} {reason}" for reason, n in sorted(counts.items()))
    where = f"list in {path}" if path is not None else "no report_dir given, no list written"
    head = f"skipped {len(entries):,} of {total_rows:,} {split} rows"
    return f"{head}: {listed}; {where}" if entries else head


def summarise_file(report_dir: str | Path | None, split: str, total_rows: int) -> str | None:
    """The summary line of a split's report as it stands (every skip of the run so far, up-front
    and decode-time, from every process), or None without a report."""
    path = report_path(report_dir, split)
    if path is None or not path.is_file():
        return None
    return summarise(read_entries(path), split, total_rows, path)


def append_skip(report_dir: str | Path | None, split: str, row: int, video_id: str, field: str, reason: str = DECODE_REASON) -> bool:
    """Record one decode-time skip in the split's report unless that row is already listed.
    Returns whether a line was added (no-op without a report folder)."""
    path = report_path(report_dir, split)
    if path is None:
        return False
    with _locked(path):
        if any(entry[0] == int(row) for entry in read_entries(path)):
            return False
        line = ("" if path.exists() else _csv_line(REPORT_COLUMNS)) + _csv_line((row, video_id, field, reason))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
    return True
