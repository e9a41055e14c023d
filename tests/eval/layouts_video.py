"""Tiny composed-video benchmarks in their official layouts (EgoCVR, TF-CoVR, Dense-WebVid-CoVR),
written by the tests, with what a plain-loop reference needs to score them.

Videos are real mp4 files (32 x 32, the smallest decord reads; a few frames of one colour each,
so every clip differs).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from covr.data.toy_render import write_mp4

UIDS = [f"{v:08x}-1c2d-4e5f-8a9b-0123456789{v:02x}" for v in (10, 11, 12)]
EGO_COLUMNS = ("video_clip_id", "target_clip_ids", "video_clip_narration", "target_clip_narration", "instruction", "modified_captions")


def clip_video(path: Path, rng: np.random.Generator, frames: int = 4, fps: int = 5) -> None:
    """A clip whose frames are distinct flat colours."""
    pixels = np.broadcast_to(rng.integers(20, 236, size=(frames, 1, 1, 3)), (frames, 32, 32, 3)).astype(np.uint8)
    write_mp4(pixels, path, fps=fps)


def write_csv(path: Path, columns, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def egocvr_clips() -> list[tuple[str, str]]:
    """(clip_name, video_uid): four whole-second clips per video and one millisecond-named distractor."""
    clips = [(f"{uid}_{2 * i}_{2 * i + 2}", uid) for uid in UIDS for i in range(4)]
    clips.append((f"{UIDS[0]}_5-5_7-25", UIDS[0]))  # 5.5 s to 7.25 s
    return clips


def make_egocvr(root: Path, seed: int = 0, full_videos: bool = False, missing: str | None = None) -> dict:
    """EgoCVR's layout: egocvr_data.csv (two rows repeated exactly), egocvr_annotations_gallery.csv,
    data/egocvr_clips/<uid>/<clip>.mp4 (or Ego4D full videos under ego4d/v2/full_scale when
    `full_videos`); `missing` names a clip whose file is not written.

    Queries: multi-target, a self-target ("No change required."), a target whose row is repeated,
    a local gallery of one row (not scored), candidate lists with repeated positions."""
    rng = np.random.default_rng(seed)
    clips = egocvr_clips()
    names = [c for c, _ in clips]
    data = clips[:6] + [clips[2]] + clips[6:] + [clips[9]]  # rows 6 and 14 repeat rows 2 and 9
    write_csv(root / "annotation/egocvr/egocvr_data.csv", ("clip_name", "narration_text", "video_uid"),
              [{"clip_name": c, "narration_text": f"#C C does step {n}", "video_uid": u} for n, (c, u) in enumerate(data)])  # fmt: skip
    if full_videos:
        for uid in UIDS:  # 7.6 s at 5 fps: each video's last clip (6 s to 8 s) runs past its end
            clip_video(root / "ego4d/v2/full_scale" / f"{uid}.mp4", rng, frames=38)
    else:
        for name, uid in clips:
            if name != missing:
                clip_video(root / "data/egocvr_clips" / uid / f"{name}.mp4", rng, frames=3 + len(name) % 3)
    same_video = {uid: [p for p, (_, u) in enumerate(data) if u == uid] for uid in UIDS}
    everything = list(range(len(data)))
    specs = [  # (reference, targets, global positions, local positions)
        (0, [1, 3], everything, same_video[UIDS[0]]),
        (5, [5], everything, same_video[UIDS[1]]),  # self-target
        (4, [6], everything[3:], [4]),  # a local gallery of one row: not scored locally
        (8, [9], everything, same_video[UIDS[2]]),  # the target's row is repeated (rows 9 and 14)
        (10, [11, 2, 8], everything + [0, 0], same_video[UIDS[2]] + [9]),  # repeated positions
        (1, [2], everything[:10], same_video[UIDS[0]]),
        (7, [4], everything, same_video[UIDS[1]]),
    ]
    rows, queries = [], []
    for n, (ref, targets, global_idx, local_idx) in enumerate(specs):
        text = " No change required." if targets == [ref] else f' "C moves the tool {n} times to the left."'
        rows.append({
            "video_clip_id": names[ref], "target_clip_ids": str([names[t] for t in targets]),
            "video_clip_narration": f"#C C holds tool {n}", "target_clip_narration": f"# C C drops tool {n}",
            "instruction": f"Move the tool {n}", "modified_captions": text, "global_idx": str(global_idx), "local_idx": str(local_idx),
        })  # fmt: skip
        queries.append({"reference": names[ref], "targets": [names[t] for t in targets], "global": global_idx, "local": local_idx,
                        "text": text, "instruction": f"Move the tool {n}"})  # fmt: skip
    write_csv(root / "annotation/egocvr/egocvr_annotations_gallery.csv", EGO_COLUMNS + ("global_idx", "local_idx"), rows)
    return {"data": [c for c, _ in data], "uid": dict(clips), "queries": queries}


def make_tf_covr(root: Path, split: str = "test", seed: int = 0, missing: str | None = None) -> dict:
    """TF-CoVR's layout: annotations/<split>_finegd.csv and FineGD_videos/<id>.mp4. Targets repeat
    across rows (a duplicated gallery), a query's own video is another row's target (masked), one
    row's ground truths include its query video, numbers in the texts ("2.5", "1", "10")."""
    rng = np.random.default_rng(seed)
    videos = [f"{i:02d}_{7 * i:03d}_A_{i % 3:04d}" for i in range(9)]
    for v in videos:
        if v != missing:
            clip_video(root / "FineGD_videos" / f"{v}.mp4", rng, frames=3)
    specs = [  # (query, target, other ground truths)
        (0, 1, [2, 3]), (4, 1, [5]), (2, 3, [1, 6]), (1, 0, []), (5, 6, [0, 7, 8]), (6, 2, [4]),
        (3, 7, [1, 2, 3]), (7, 1, [2]), (8, 4, [4, 5]), (0, 5, []),
    ]  # fmt: skip
    texts = ["Do 2.5 turns instead of 1.", "Add a twist (half).", "Jump 10 times; then: land!", "Swap to a 1.5 salto.", "Make it 3 somersaults."]
    rows, queries = [], []
    for n, (q, t, others) in enumerate(specs):
        gts = [videos[t]] + [videos[o] for o in others]
        text = texts[n % len(texts)] + f" Variant {n}."
        rows.append({"query_id": 100 + n, "query_video": videos[q], "target_video": videos[t], "target_videos_ids": str(gts), "modification": text})
        queries.append({"reference": videos[q], "target": videos[t], "gts": gts, "text": text})
    write_csv(root / "annotations" / f"{split}_finegd.csv", ("query_id", "query_video", "target_video", "target_videos_ids", "modification"), rows)
    return {"videos": videos, "queries": queries}


def make_dense_webvid_covr(root: Path, seed: int = 0) -> dict:
    """Dense-WebVid-CoVR's layout: annotations/dense-webvid8m-covr_test.csv (index, pth1, pth2, edit,
    txt1, txt2, scores) over WebVid/8M/train/<pth>.mp4; edits of 12 to 48 words (CoVR's 30-word
    limit cuts the long ones), a reference that is another row's target (masked)."""
    rng = np.random.default_rng(seed)
    videos = [f"{1000 + i}/{5000 + i}" for i in range(8)]
    for v in videos:
        clip_video(root / "WebVid/8M/train" / f"{v}.mp4", rng, frames=4)
    rows, queries = [], []
    for n in range(6):
        reference, target = (videos[n + 2], videos[n]) if n else (videos[1], videos[0])
        words = " ".join(f"word{n}x{w}" for w in range(12 + 9 * n))
        edit = f"Change the scene: {words}."
        caption = "A long dense description " + " ".join(f"detail{w}" for w in range(40))
        scores = "[0.3, 0.2, 0.25, 0.31]" if n % 2 else ""
        rows.append({"index": n, "pth1": reference, "pth2": target, "edit": edit, "txt1": caption, "txt2": "t", "scores": scores})
        queries.append({"reference": reference, "target": target, "scores": [float(x) for x in scores.strip("[]").split(",")] if scores else [],
                        "edit": edit, "caption": caption})  # fmt: skip
    path = write_csv(root / "annotations/dense-webvid8m-covr_test.csv", ("index", "pth1", "pth2", "edit", "txt1", "txt2", "scores"), rows)
    return {"videos": videos, "queries": queries, "csv": path}
