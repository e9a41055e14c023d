"""WebVid-CoVR test (and val) from the annotation CSV.

Columns used: pth1 (query video id `page_dir/videoid`), pth2 (target id), edit (modification
text), txt1 (caption of the query video), scores (per-frame scores of the target, optional);
videos are `<video_root>/<pth>.mp4`.
Gallery = the target videos (repeated ids kept once; the `covr2` protocol makes one column per
row from them, see covr.eval.protocols); the query's own reference video is masked;
R@{1,5,10,50}, meanR3 and meanR4.
"""

from __future__ import annotations

import csv
from pathlib import Path

from covr.data.annotations import parse_scores
from covr.eval.datasets.base import (
    AnnotationError,
    Benchmark,
    GalleryFiles,
    Protocol,
    Query,
    RetrievalTask,
    expect,
    single_task_summary,
)
from covr.eval.metrics import webvid_covr_means

REQUIRED_COLUMNS = ("pth1", "pth2", "edit", "txt1")
PROTOCOL = Protocol(recall_ks=(1, 5, 10, 50))
TARGET_FRAMES = 15  # CoVR: the middles of 15 equal segments (the evaluator's `target_frames` overrides)


def load_webvid_covr(annotation: str | Path, video_root: str | Path, split: str = "test", name: str = "webvid_covr") -> Benchmark:
    """Read a WebVid-CoVR CSV (gallery videos are encoded from TARGET_FRAMES frames unless overridden).

    Dense-WebVid-CoVR (annotations/dense-webvid8m-covr_test.csv: the same columns, longer edits and
    captions, the same videos) is read by this reader under its own `name`."""
    annotation, video_root = Path(annotation), Path(video_root)
    if not annotation.is_file():
        raise AnnotationError(f"{annotation}: annotation file not found")
    with open(annotation, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise AnnotationError(f"{annotation}: missing column(s) {missing}; header is {reader.fieldnames}")
        rows = list(reader)
    queries, targets = [], {}
    for n, row in enumerate(rows):
        where = f"row {n + 2}"  # line number, counting the header
        for column in ("pth1", "pth2", "edit"):
            expect(bool((row.get(column) or "").strip()), annotation, where, dict(row), f"empty {column}")
        reference, target = row["pth1"].strip(), row["pth2"].strip()
        targets.setdefault(target, video_root / f"{target}.mp4")
        caption = (row.get("txt1") or "").strip()
        scores = parse_scores(row.get("scores"))
        queries.append(
            Query(
                id=str(n),
                reference=reference,
                reference_path=video_root / f"{reference}.mp4",
                text=row["edit"].strip(),
                caption=caption or None,
                target=target,
                exclude=(reference,),
                frame_scores=tuple(scores.tolist()) if scores is not None else None,
            )
        )
    return Benchmark(
        name=name,
        split=split,
        tasks=[RetrievalTask(f"{name}/{split}", queries, GalleryFiles(list(targets), list(targets.values())))],
        protocol=PROTOCOL,
        summarise=single_task_summary(webvid_covr_means),
        num_frames=TARGET_FRAMES,
    )
