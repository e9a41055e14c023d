"""TF-CoVR (NeurIPS 2025 D&B, github.com/UCF-CRCV/TF-CoVR): temporally fine-grained composed video
retrieval on FineGym and FineDiving clips, several correct targets per query.

Layout under `root` (what the released evaluation code reads):
  annotations/{test,val}_finegd.csv  query_id, query_video, target_video, target_videos_ids
      (a list literal of every correct video id), modification
  FineGD_videos/<video id>.mp4  flat
(The later parquet release has a schema nobody here could check: convert it to these columns.)

Protocol of the code (finegd_test.py + TestCirco): the gallery is the `target_video` column, one
entry per row, repeats kept (the `tf_covr` protocol; `unique` ranks each video once); columns of
the query's own video are scored 100 below their score; mAP@{5,10,25,50} over `target_videos_ids`
(headline mAP@50) and R@{5,10,25,50} counting the top-K entries equal to `target_video`.
Text: numbers to words ("1.5" -> "one and a half"), then TF-CoVR's pre_caption, which keeps ".".
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from covr.eval.datasets.base import (
    AnnotationError,
    Benchmark,
    GalleryFiles,
    Protocol,
    Query,
    RetrievalTask,
    expect,
    literal_list,
    read_csv,
    single_task_summary,
)
from covr.eval.texts import TEXT_RULES, numbers_to_words as to_words

REQUIRED_COLUMNS = ("query_video", "target_video", "target_videos_ids", "modification")
KS = (5, 10, 25, 50)  # the code's ranks, for mAP and recall alike
TARGET_FRAMES = 15  # tools/embs/save_blip2_embs_vids.py --frames_video default


def load_tf_covr(
    root: str | Path,
    split: str = "test",
    annotation: str | Path | None = None,
    video_root: str | Path | None = None,
    numbers_to_words: bool = True,
    text_rule: Literal["tf_covr", "pre_caption"] = "tf_covr",
    name: str = "tf_covr",
) -> Benchmark:
    """Read TF-CoVR `split` (see the module docstring); ids are the CSV's video ids."""
    if text_rule not in TEXT_RULES:
        raise ValueError(f"TF-CoVR text_rule must be one of {tuple(TEXT_RULES)}, got {text_rule!r}")
    root = Path(root)
    annotation = Path(annotation) if annotation is not None else root / "annotations" / f"{split}_finegd.csv"
    video_root = Path(video_root) if video_root is not None else root / "FineGD_videos"
    if annotation.suffix == ".parquet":
        raise AnnotationError(f"{annotation}: parquet is not read (its schema is unverified); write a CSV with columns {list(REQUIRED_COLUMNS)}")
    rows = read_csv(annotation, REQUIRED_COLUMNS)
    queries, listing = [], []
    for n, row in enumerate(rows):
        where = f"row {n + 2}"
        for column in ("query_video", "target_video", "modification"):
            expect(bool((row[column] or "").strip()), annotation, where, dict(row), f"empty {column}")
        reference, target = row["query_video"].strip(), row["target_video"].strip()
        listed = literal_list(row["target_videos_ids"], annotation, where, "target_videos_ids", (str, int))
        expect(bool(listed), annotation, where, dict(row), "target_videos_ids is empty")
        text = row["modification"].strip()
        listing.append((str(n), target))
        queries.append(
            Query(
                id=str(n),
                reference=reference,
                reference_path=video_root / f"{reference}.mp4",
                text=to_words(text) if numbers_to_words else text,
                target=target,
                ground_truths=tuple(str(g).strip() for g in listed),  # as listed: the code's |G| counts repeats
                exclude=(reference,),
            )
        )
    if not queries:
        raise AnnotationError(f"{annotation}: no queries")
    videos = list(dict.fromkeys(target for _, target in listing))
    return Benchmark(
        name=name,
        split=split,
        tasks=[RetrievalTask(f"{name}/{split}", queries, GalleryFiles(videos, [video_root / f"{v}.mp4" for v in videos]), listing)],
        protocol=Protocol(recall_ks=KS, map_ks=KS),
        summarise=single_task_summary(),
        options={"numbers_to_words": numbers_to_words, "text_rule": text_rule},
        num_frames=TARGET_FRAMES,
        text_rule=text_rule,
    )
