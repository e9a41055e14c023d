"""Up-front checks of every file a task reads, and what a missing one does to the queries.

Every reference and gallery file is checked (exists, is a non-empty regular file, opens as an
image or video) before anything is encoded, so a bad file fails a run in seconds rather than after
the gallery is encoded. A query whose reference, target or any ground truth is missing or
unreadable cannot be scored: that is an error, unless `allow_missing` (the same switch as the
WebVid-CoVR dataset's) drops such queries, which are then counted and listed, and the metrics
cover the answerable ones. A gallery item no query needs (a distractor) is skipped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from covr.data.errors import MissingVideosError
from covr.eval.datasets.base import Query
from covr.eval.media import Media, media_key, media_problems

log = logging.getLogger(__name__)
Failures = list[tuple[str, str]]  # (query id or gallery id, reason)


def unanswerable(queries: Sequence[Query], bad_references: Mapping[str, str], bad_items: Mapping[str, str]) -> Failures:
    """(query id, reason) of every query whose reference path, target or ground truth is bad."""
    failed = []
    for q in queries:
        reason = bad_references.get(media_key(q.reference_path)) if q.reference_path is not None else None
        if reason is not None:
            failed.append((q.id, f"reference {q.reference} ({q.reference_path}): {reason}"))
            continue
        item = next((g for g in q.needed() if g in bad_items), None)
        if item is not None:
            failed.append((q.id, f"target {item}: {bad_items[item]}"))
    return failed


def drop_or_fail(queries: Sequence[Query], failed: Failures, allow_missing: bool, task: str, override: str) -> list[Query]:
    """The queries not in `failed`; without `allow_missing`, any failure raises MissingVideosError
    naming the first query, the count, and the exact override that evaluates without them."""
    if not failed:
        return list(queries)
    if not allow_missing:
        query, reason = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise MissingVideosError(
            f"{task}: query {query}: {reason}{more}; {len(failed)} of {len(queries)} queries cannot be scored. "
            f"Restore the files, or evaluate the {len(queries) - len(failed)} answerable queries with {override}"
        )
    bad = {query for query, _ in failed}
    log.warning("%s: dropping %d of %d queries whose files are missing or unreadable, e.g. %s", task, len(bad), len(queries), failed[0][1])
    return [q for q in queries if q.id not in bad]


def check_task_files(
    queries: Sequence[Query], gallery_ids: Sequence[str], gallery_paths: Sequence[Media], allow_missing: bool, task: str, override: str
) -> tuple[list[Query], Failures, dict[str, str]]:
    """Check every file of a task before encoding -> (answerable queries, dropped (id, reason),
    {gallery id: reason} of the gallery items to leave out)."""
    problems = media_problems([q.reference_path for q in queries if q.reference_path is not None] + list(gallery_paths))
    bad_items = {i: problems[media_key(p)] for i, p in zip(gallery_ids, gallery_paths) if media_key(p) in problems}
    failed = unanswerable(queries, problems, bad_items)
    return drop_or_fail(queries, failed, allow_missing, task, override), failed, bad_items
