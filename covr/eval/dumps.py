"""Per-task dumps for checking covr's numbers outside covr (`save_rankings`, `save_embeddings`).

<out>/<task>/rankings.jsonl, one JSON object per query:
  {"query": id, "reference": id, "ids": [top-K gallery ids, best first], "scores": [their scores]}
  plus "columns": [top-K column keys] when the protocol has one column per query row (WebVid-CoVR
  `covr2`: a column is keyed by the query id whose target it shows, so an id can repeat) or per
  entry of the benchmark's own list (EgoCVR's data rows, TF-CoVR's annotation rows), and
  "subset": [ids] for CIRR's subset ranking.
<out>/<task>/embeddings.npz (numpy; strings as unicode arrays):
  query_ids [N], reference_ids [N], target_ids [N] ("" when unknown)
  query_tokens [N, Q, E] float32: the composed queries exactly as scored (per-token normalised)
  query_frame_scores [N, S] float32: each row's per-frame target scores, NaN-padded (S = 0 if none)
  gallery_ids [G], gallery_tokens [G, F, Q, E] (per-frame target tokens; [G, F, E] from a token-mean
  store), gallery_frame_mask [G, F] bool, and for video galleries gallery_frame_scores [G, F]
  float32 (the scores of the first row whose target the video is; NaN where none)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from covr.eval.datasets.base import Query
from covr.eval.encoding import ItemEmbeddings
from covr.eval.scoring import TaskRanking


def task_folder(out_dir: Path, task: str) -> Path:
    """<out_dir>/<task name>, e.g. runs/test/<run>/fashioniq/val/dress."""
    folder = Path(out_dir) / task
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_rankings(path: Path, queries: Sequence[Query], ranking: TaskRanking) -> Path:
    """rankings.jsonl (see the module docstring)."""
    rows_protocol = ranking.columns.ids != ranking.columns.items
    item_of = dict(zip(ranking.columns.ids, ranking.columns.items))
    with open(path, "w", encoding="utf-8") as f:
        for i, q in enumerate(queries):
            line = {"query": q.id, "reference": q.reference, "ids": [item_of[c] for c in ranking.ranked[i]], "scores": ranking.scores[i]}
            if rows_protocol:
                line["columns"] = ranking.ranked[i]
            if ranking.subset_ranked is not None:
                line["subset"] = ranking.subset_ranked[i]
            f.write(json.dumps(line) + "\n")
    return path


def _scores_matrix(lists: Sequence[Sequence[float] | None], width: int | None = None) -> np.ndarray:
    width = max((len(s) for s in lists if s), default=0) if width is None else width
    out = np.full((len(lists), width), np.nan, dtype=np.float32)
    for row, scores in enumerate(lists):
        if scores:
            out[row, : min(len(scores), width)] = scores[:width]
    return out


def write_embeddings(path: Path, queries: Sequence[Query], query_tokens: Tensor, gallery: ItemEmbeddings, video: bool) -> Path:
    """embeddings.npz (see the module docstring); the gallery must be kept at level "frames"."""
    if gallery.level != "frames":
        raise ValueError("embedding dumps need the gallery's per-frame tokens (level 'frames')")
    arrays = {
        "query_ids": np.array([q.id for q in queries], dtype=str),
        "reference_ids": np.array([q.reference for q in queries], dtype=str),
        "target_ids": np.array([q.target or "" for q in queries], dtype=str),
        "query_tokens": query_tokens.float().cpu().numpy(),
        "query_frame_scores": _scores_matrix([q.frame_scores for q in queries]),
        "gallery_ids": np.array(gallery.ids, dtype=str),
        "gallery_tokens": gallery.embeddings.cpu().numpy(),
        "gallery_frame_mask": gallery.frame_mask.cpu().numpy(),
    }
    if video:
        first: dict[str, tuple[float, ...] | None] = {}
        for q in queries:
            if q.target is not None and q.frame_scores and q.target not in first:
                first[q.target] = q.frame_scores
        width = gallery.frame_mask.shape[1]
        arrays["gallery_frame_scores"] = _scores_matrix([first.get(i) for i in gallery.ids], width)
    np.savez(path, **arrays)
    return path
