"""Progress of long loops, readable on a terminal and in a log file alike.

On a terminal a tqdm bar redraws in place. Written to a file (a Slurm output file, `> log.txt`) a
bar is a stream of carriage returns that most viewers show as one growing line, and a buffered
one shows nothing for minutes; there `Progress` logs a plain line every `every_s` seconds
instead: `encode gallery: 1,200/2,556 videos (46.9%), 31.5 videos/s, ETA 43s`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

log = logging.getLogger("covr.progress")
T = TypeVar("T")
EVERY_S = 30.0  # seconds between two progress lines in a log file


def format_duration(seconds: float) -> str:
    """'45s', '12m30s', '3h05m'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def rate_and_eta(done: float, total: float | None, elapsed: float, unit: str) -> str:
    """'3.2 videos/s, ETA 12m30s' (ETA only with a total and some work done)."""
    if done <= 0 or elapsed <= 0:
        return "starting"
    rate = done / elapsed
    text = f"{rate:.3g} {unit}/s"
    if total:
        text += f", ETA {format_duration((total - done) / rate)}"
    return text


class Progress:
    """Count work done: a tqdm bar on a terminal, else a log line every `every_s` seconds and at the end.

    with Progress(total=len(items), desc="extract", unit="video") as bar:
        bar.update(n)
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", enabled: bool = True, every_s: float = EVERY_S, terminal: bool | None = None):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.done = 0
        self.enabled = enabled
        terminal = sys.stderr.isatty() if terminal is None else terminal
        self._bar = None
        if enabled and terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
        self._start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last >= self.every_s:
            self._log()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and time.monotonic() - self._start >= self.every_s:  # short loops stay quiet
            self._log(final=True)

    def _log(self, final: bool = False) -> None:
        self._last = time.monotonic()
        elapsed = self._last - self._start
        count = f"{self.done:,}/{self.total:,}" if self.total else f"{self.done:,}"
        share = f" ({100 * self.done / self.total:.1f}%)" if self.total else ""
        tail = f"done in {format_duration(elapsed)}" if final else rate_and_eta(self.done, self.total, elapsed, self.unit)
        log.info("%s: %s %s%s, %s", self.desc, count, self.unit, share, tail)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it", enabled: bool = True) -> Iterator[T]:
    """Iterate `iterable`, counting one per item (`Progress`)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc, unit, enabled) as bar:
        for item in iterable:
            yield item
            bar.update()
