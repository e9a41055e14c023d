"""EgoCVR (ECCV 2024, github.com/ExplainableML/EgoCVR): egocentric composed video retrieval,
2,295 queries on Ego4D clips, global and local galleries.

Layout under `root` (the repository's, plus the separately downloaded gallery file):
  annotation/egocvr/egocvr_annotations_gallery.csv  one row per query: video_clip_id,
      target_clip_ids (list literal), video_clip_narration, target_clip_narration, instruction,
      modified_captions, global_idx, local_idx (list literals of ROW POSITIONS in egocvr_data.csv)
  annotation/egocvr/egocvr_data.csv  clip_name, narration_text, video_uid: the gallery rows
      (some rows repeat another row exactly; each position is its own gallery entry)
  data/egocvr_clips/<video_uid>/<clip_name>.mp4  the pre-cut clips (video_source: clips)
  or Ego4D's full videos, <ego4d_root>/v2/full_scale/<video_uid>.mp4, of which each clip's span
  is decoded (video_source: full_videos; clip_name = <video_uid>_<start>_<end>, "243-2" = 243.2 s)

Protocol (egocvr_retrieval.py): a query ranks only the rows its `global_idx` (setting global,
R@1/5/10) or `local_idx` (setting local, same video, R@1/2/3) lists; a hit is any target clip
in the top K; a query listing fewer than `min_gallery_size` (2) rows is not scored. The code
never masks the query's own clip: the lists decide (`exclude_query_clip` is the option).
"""

from __future__ import annotations

import re
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
from covr.eval.media import Clip, Media

ANNOTATION = Path("annotation/egocvr/egocvr_annotations_gallery.csv")
DATA = Path("annotation/egocvr/egocvr_data.csv")
CLIPS = Path("data/egocvr_clips")
FULL_VIDEOS = Path("v2/full_scale")  # under the Ego4D CLI's output directory
TEXTS = ("modified_captions", "instruction", "target_clip_narration")
RECALL_KS = {"global": (1, 5, 10), "local": (1, 2, 3)}
TARGET_FRAMES = 15  # the official code's target frames (mean of per-frame embeddings)
_NARRATION_TAG = re.compile(r"^\s*#\s*[A-Za-z]\b\s*")  # "#C ", "#c ", "#O ", "# C "


def clip_span(clip_name: str) -> tuple[float, float]:
    """(start, end) seconds from `<video_uid>_<start>_<end>` ("243-2" -> 243.2)."""
    parts = clip_name.rsplit("_", 2)
    if len(parts) != 3:
        raise ValueError(f"clip name {clip_name!r} is not <video_uid>_<start>_<end>")
    return float(parts[1].replace("-", ".", 1)), float(parts[2].replace("-", ".", 1))


def narration(text: str) -> str:
    """An Ego4D narration without its "#C" / "#O" tag ("#C C opens the door" -> "C opens the door")."""
    return _NARRATION_TAG.sub("", text or "").strip()


def _media(clip: str, uid: str, root: Path, source: str, ego4d: Path | None, path: Path, where: str) -> Media:
    if source == "clips":
        return root / uid / f"{clip}.mp4"
    try:
        start, end = clip_span(clip)
        return Clip(ego4d / FULL_VIDEOS / f"{uid}.mp4", start, end)
    except ValueError as error:
        raise AnnotationError(f"{path}: {where}: {error}") from None


def load_egocvr(
    root: str | Path,
    setting: Literal["global", "local"] = "global",
    text: Literal["modified_captions", "instruction", "target_clip_narration"] = "modified_captions",
    caption: Literal["narration"] | None = None,
    min_gallery_size: int = 2,
    exclude_query_clip: bool = False,
    video_source: Literal["clips", "full_videos"] = "clips",
    annotation: str | Path | None = None,
    data: str | Path | None = None,
    clip_root: str | Path | None = None,
    ego4d_root: str | Path | None = None,
    name: str = "egocvr",
) -> Benchmark:
    """Read EgoCVR for one gallery `setting` (see the module docstring for every option)."""
    if setting not in RECALL_KS:
        raise ValueError(f"EgoCVR setting must be one of {tuple(RECALL_KS)}, got {setting!r}")
    if text not in TEXTS:
        raise ValueError(f"EgoCVR text must be one of {TEXTS}, got {text!r}")
    if caption not in (None, "narration"):
        raise ValueError(f"EgoCVR caption must be null or 'narration', got {caption!r}")
    if video_source not in ("clips", "full_videos") or (video_source == "full_videos" and ego4d_root is None):
        raise ValueError(f"EgoCVR video_source must be 'clips' or 'full_videos' (with ego4d_root), got {video_source!r}")
    root = Path(root)
    annotation = Path(annotation) if annotation is not None else root / ANNOTATION
    data = Path(data) if data is not None else root / DATA
    clip_root = Path(clip_root) if clip_root is not None else root / CLIPS
    ego4d = Path(ego4d_root) if ego4d_root is not None else None
    if not annotation.is_file() and (annotation.parent / "egocvr_annotations.csv").is_file():
        raise AnnotationError(f"{annotation}: not found; the gallery lists are a separate download (see the EgoCVR README, step 2)")

    rows = read_csv(data, ("clip_name",))
    listing, uid_of = [], {}
    for n, row in enumerate(rows):
        clip = (row["clip_name"] or "").strip()
        expect(bool(clip), data, f"row {n + 2}", dict(row), "empty clip_name")
        listing.append((str(n), clip))
        uid_of.setdefault(clip, (row.get("video_uid") or "").strip() or clip.split("_")[0])  # the code: split("_")[0]

    column = f"{setting}_idx"
    entries = read_csv(annotation, ("video_clip_id", "target_clip_ids", text, column) + (("video_clip_narration",) if caption else ()))
    queries, referenced = [], {}
    for n, row in enumerate(entries):
        where = f"row {n + 2}"
        reference = (row["video_clip_id"] or "").strip()
        expect(bool(reference), annotation, where, dict(row), "empty video_clip_id")
        query_text = (row[text] or "").strip()
        expect(bool(query_text), annotation, where, dict(row), f"empty {text}")
        targets = [t.strip() for t in literal_list(row["target_clip_ids"], annotation, where, "target_clip_ids", str)]
        expect(bool(targets), annotation, where, dict(row), "target_clip_ids is empty")
        unknown = [t for t in targets if t not in uid_of]
        expect(not unknown, annotation, where, dict(row), f"target clip(s) {unknown} are not rows of {data.name}")
        positions = literal_list(row[column], annotation, where, column, int)
        bad = [p for p in positions if not 0 <= p < len(listing)]
        expect(not bad, annotation, where, dict(row), f"{column} position(s) {bad[:5]} outside {data.name}'s {len(listing)} rows")
        for p in positions:
            referenced.setdefault(listing[p][1], None)
        uid = uid_of.get(reference) or reference.split("_")[0]
        queries.append(
            Query(
                id=str(n),
                reference=reference,
                reference_path=_media(reference, uid, clip_root, video_source, ego4d, annotation, where),
                text=query_text,
                caption=narration(row["video_clip_narration"]) if caption == "narration" else None,
                target=targets[0],
                ground_truths=tuple(dict.fromkeys(targets)),
                exclude=(reference,) if exclude_query_clip else (),
                candidates=tuple(dict.fromkeys(str(p) for p in positions)),
            )
        )
    if not queries:
        raise AnnotationError(f"{annotation}: no queries")
    clips = list(dict.fromkeys(c for _, c in listing if c in referenced))  # each listed clip once, in file order
    paths = [_media(c, uid_of[c], clip_root, video_source, ego4d, data, f"clip {c}") for c in clips]
    options = {
        "setting": setting, "text": text, "caption": caption, "min_gallery_size": min_gallery_size,
        "exclude_query_clip": exclude_query_clip, "video_source": video_source,
    }  # fmt: skip
    return Benchmark(
        name=name,
        split=setting,
        tasks=[RetrievalTask(f"{name}/{setting}", queries, GalleryFiles(clips, paths), listing)],
        protocol=Protocol(recall_ks=RECALL_KS[setting], recall_of="any", min_candidates=min_gallery_size),
        summarise=single_task_summary(),
        options=options,
        num_frames=TARGET_FRAMES,
    )
