"""Errors raised by covr.data; each message is one line naming the file, row or field at fault."""

from __future__ import annotations


class CovrDataError(Exception):
    """Base class of every data error (bad annotation file, unreadable video, stale store)."""


class VideoDecodeError(CovrDataError):
    """A video or image could not be read: missing, empty, truncated or not a video at all."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode {self.path}: {reason}")


class AnnotationError(CovrDataError):
    """An annotation file (CSV / JSON) is malformed: missing column, bad row."""


class MissingVideosError(CovrDataError):
    """Evaluation videos are missing; evaluation on a partial gallery must be asked for explicitly."""


class EmbeddingStoreError(CovrDataError):
    """An embedding store is absent, incomplete, or was written by another model / layout."""
