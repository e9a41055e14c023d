"""The structure every benchmark reader returns, and annotation-reading helpers.

A benchmark is one or more retrieval tasks (FashionIQ has one per category, each with its own
gallery); a task is a list of queries ranked against one gallery. Ids are strings throughout;
paths are absolute or relative to the working directory.
"""

from __future__ import annotations

import ast
import csv
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from covr.data.errors import AnnotationError
from covr.eval.media import Media

__all__ = ["AnnotationError", "Benchmark", "GalleryFiles", "Protocol", "Query", "RetrievalTask"]


@dataclass(frozen=True)
class Query:
    """One composed query: reference image/video + modification text (or, `modality` "text" / "image",
    a text-to-image query without a reference or an image-to-image query without a text)."""

    id: str
    reference: str  # gallery-style id of the reference image / video ("" for a text-only query)
    reference_path: Media | None  # a file, a clip (time span of a video) or a frame folder; None: text only
    text: str
    caption: str | None = None  # caption of the reference (WebVid-CoVR txt1, or a caption file)
    target: str | None = None  # the single target (None on test splits)
    ground_truths: tuple[str, ...] = ()  # every correct answer (CIRCO); defaults to (target,)
    exclude: tuple[str, ...] = ()  # gallery ids never returned for this query (its reference)
    subset: tuple[str, ...] | None = None  # CIRR img_set members (reference included)
    categories: Mapping[str, str] = field(default_factory=dict)  # e.g. {"category": "object"}
    frame_scores: tuple[float, ...] | None = None  # per-frame scores of the target (WebVid-CoVR `scores`)
    candidates: tuple[str, ...] | None = None  # the only gallery entries this query ranks (keys of the task's
    # listing, e.g. EgoCVR's global_idx rows); None = the whole gallery
    modality: Literal["composed", "text", "image"] = "composed"  # text: encode_text; image: the target encoder

    def correct(self) -> tuple[str, ...]:
        """Every id that counts as a hit."""
        if self.ground_truths:
            return self.ground_truths
        return (self.target,) if self.target is not None else ()

    def needed(self) -> tuple[str, ...]:
        """Gallery ids without which this query cannot be scored: its target and ground truths."""
        return tuple(dict.fromkeys(((self.target,) if self.target is not None else ()) + self.ground_truths))


@dataclass(frozen=True)
class GalleryFiles:
    """A gallery as a benchmark lists it: item ids and the files they are read from (same order)."""

    ids: list[str]
    paths: list[Media]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.paths):
            raise ValueError(f"gallery has {len(self.ids)} ids but {len(self.paths)} paths")
        if len(set(self.ids)) != len(self.ids):
            dup = next(i for i, x in enumerate(self.ids) if x in set(self.ids[:i]))
            raise ValueError(f"gallery id {self.ids[dup]!r} appears twice")


@dataclass(frozen=True)
class Protocol:
    """Which metrics a task reports (K values) and how many results a submission lists."""

    recall_ks: tuple[int, ...] = (1, 5, 10, 50)
    subset_ks: tuple[int, ...] = ()  # CIRR Recall_subset@K
    map_ks: tuple[int, ...] = ()  # CIRCO mAP@K
    submission_k: int = 50
    recall_of: Literal["target", "any"] = "target"  # R@K hit: the single target, or any correct item (EgoCVR)
    min_candidates: int = 0  # a query ranking fewer gallery entries is left unscored and counted (EgoCVR: 2)


@dataclass
class RetrievalTask:
    """Queries ranked against one gallery; `name` keys the gallery cache ("cirr/val")."""

    name: str
    queries: list[Query]
    gallery: GalleryFiles
    # the benchmark's own gallery list when it repeats items: (entry key, item id), e.g. EgoCVR's
    # egocvr_data.csv rows or TF-CoVR's target_video column; protocols with columns="listing" rank it
    listing: list[tuple[str, str]] | None = None


@dataclass
class Benchmark:
    """A reader's output: tasks, protocol, how to summarise, and which submission (test splits)."""

    name: str
    split: str
    tasks: list[RetrievalTask]
    protocol: Protocol
    summarise: Callable[[dict[str, dict[str, float]]], dict[str, float]]  # task metrics -> headline
    submission: str | None = None  # "cirr" or "circo" when this split is scored by a test server
    options: dict[str, Any] = field(default_factory=dict)  # reader options used, for the results
    num_frames: int = 1  # frames per gallery item (videos); images are one-frame videos
    text_rule: str = "pre_caption"  # covr.eval.texts rule the query texts are cleaned with

    @property
    def has_labels(self) -> bool:
        """True when queries carry targets (val splits), False on test-server splits."""
        return all(q.correct() for t in self.tasks for q in t.queries)


def single_task_summary(extra: Callable[[dict[str, float]], dict[str, float]] | None = None):
    """Summary for one-task benchmarks: the task's metrics plus `extra(metrics)` (means)."""

    def summarise(task_metrics: dict[str, dict[str, float]]) -> dict[str, float]:
        (metrics,) = task_metrics.values()
        return {**metrics, **(extra(metrics) if extra and metrics else {})}

    return summarise


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or malformed file raises AnnotationError naming it."""
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnnotationError(f"{path}: not valid JSON ({error})") from error


def expect(condition: bool, path: Path, where: str, entry: Any, problem: str) -> None:
    """Raise AnnotationError naming the file and the offending entry unless `condition` holds."""
    if not condition:
        text = json.dumps(entry, default=str) if not isinstance(entry, str) else entry
        if len(text) > 200:
            text = text[:200] + "..."
        raise AnnotationError(f"{path}: {where}: {problem}: {text}")


def field_of(entry: Any, key: str, kind: type | tuple[type, ...], path: Path, where: str) -> Any:
    """entry[key] checked to be present and of type `kind` (AnnotationError otherwise)."""
    expect(isinstance(entry, dict), path, where, entry, "expected an object")
    expect(key in entry, path, where, entry, f"missing field {key!r}")
    value = entry[key]
    right_type = isinstance(value, kind) and not isinstance(value, bool)
    expect(right_type, path, where, entry, f"field {key!r} has the wrong type")
    return value


def read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV file with a header; a missing file or column raises AnnotationError naming it."""
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of the first column's name
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise AnnotationError(f"{path}: missing column(s) {missing}; header is {reader.fieldnames}")
        return list(reader)


def literal_list(text: str | None, path: Path, where: str, column: str, kind: type | tuple[type, ...]) -> list:
    """A Python list literal cell ("['a', 'b']", "[3, 7]") parsed safely; its entries must be `kind`."""
    try:
        value = ast.literal_eval((text or "").strip())
    except (ValueError, SyntaxError):
        value = None
    valid = isinstance(value, (list, tuple)) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
    expect(valid, path, where, text or "", f"{column} is not a list literal of {getattr(kind, '__name__', kind)}")
    return list(value)
