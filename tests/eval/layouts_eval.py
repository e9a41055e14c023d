"""Tiny datasets in each benchmark's official layout, written by the tests.

Every writer returns {"gallery": [(id, path)], "queries": [{"id", "path", "text", "caption",
"exclude", "target", "gts", "subset", "reference", "categories"}]} for the brute-force reference.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from helpers_eval import write_image, write_json


def _names(rng, population, n):
    return [str(x) for x in rng.choice(population, n, replace=False)]


def make_cirr(root: Path, split: str = "val", n_images: int = 14, n_queries: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = "dev" if split == "val" else split
    names = [f"{folder}-{i}-0-img{i % 2}" for i in range(n_images)]
    for name in names:
        write_image(root / folder / f"{name}.png", rng)
    write_json(root / "image_splits" / f"split.rc2.{split}.json", {n: f"./{folder}/{n}.png" for n in names})
    entries, queries = [], []
    for p in range(n_queries):
        members = _names(rng, names, 6)
        entry = {"pairid": 100 + p, "reference": members[0], "caption": f"make it brighter {p}",
                 "img_set": {"id": p, "members": members}}  # fmt: skip
        target = None
        if split != "test1":
            target = members[1 + p % 5]
            entry.update(target_hard=target, target_soft={target: 1.0})
        entries.append(entry)
        queries.append({"id": str(100 + p), "path": root / folder / f"{members[0]}.png", "text": entry["caption"],
                        "exclude": (members[0],), "target": target, "subset": members, "reference": members[0]})  # fmt: skip
    write_json(root / "captions" / f"cap.rc2.{split}.json", entries)
    return {"gallery": [(n, root / folder / f"{n}.png") for n in names], "queries": queries}


def make_fashioniq(root: Path, categories=("dress", "shirt", "toptee"), n_images: int = 24, n_queries: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for category in categories:
        ids = [f"{category[0]}{i:04d}" for i in range(n_images)]
        for image in ids:
            write_image(root / "images" / f"{image}.png", rng)
        write_json(root / "image_splits" / f"split.{category}.val.json", ids)
        entries, queries = [], []
        for n in range(n_queries):
            candidate, target = _names(rng, ids, 2)
            captions = [f"is longer {n}", f"has {category} sleeves"]
            entries.append({"candidate": candidate, "target": target, "captions": captions})
            queries.append({"id": f"{category}-{n}", "path": root / "images" / f"{candidate}.png",
                            "text": f"{captions[0]} and {captions[1]}", "target": target, "reference": candidate})  # fmt: skip
        write_json(root / "captions" / f"cap.{category}.val.json", entries)
        out[category] = {"gallery": [(i, root / "images" / f"{i}.png") for i in ids], "queries": queries}
    return out


def make_circo(root: Path, split: str = "val", n_images: int = 20, n_queries: int = 7, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = sorted(int(x) for x in rng.choice(600000, n_images, replace=False))
    folder = root / "COCO2017_unlabeled" / "unlabeled2017"
    for image in ids:
        write_image(folder / f"{image:012d}.jpg", rng, size=(12, 9))
    write_json(root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json",
               {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 12, "height": 9} for i in ids]})  # fmt: skip
    entries, queries = [], []
    for n in range(n_queries):
        chosen = [int(x) for x in rng.choice(ids, 2 + n % 5, replace=False)]
        reference, gts = chosen[0], chosen[1:]
        entry = {"id": n, "reference_img_id": reference, "relative_caption": f"has a dog {n}", "shared_concept": "an animal"}
        if split == "val":
            entry.update(target_img_id=gts[0], gt_img_ids=gts)
        entries.append(entry)
        queries.append({"id": str(n), "path": folder / f"{reference:012d}.jpg", "text": entry["relative_caption"],
                        "exclude": (str(reference),), "target": str(gts[0]), "gts": {str(g) for g in gts},
                        "reference": str(reference)})  # fmt: skip
    write_json(root / "annotations" / f"{split}.json", entries)
    return {"gallery": [(str(i), folder / f"{i:012d}.jpg") for i in ids], "queries": queries}


def write_fake_video(path: Path, rng, frames: int) -> None:
    """A 'video' the tests' loader reads: npy uint8 [F, H, W, 3] under an .mp4 name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.save(f, rng.integers(0, 256, size=(frames, 6, 8, 3), dtype=np.uint8))


def write_mp4(path: Path, rng, frames: int) -> None:
    """A real tiny MPEG-4 video (16x16, `frames` random-colour frames) written with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for _ in range(frames):
            colour = rng.integers(0, 256, size=3, dtype=np.uint8)
            image = np.broadcast_to(colour, (16, 16, 3)).copy()
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def make_webvid_covr(root: Path, n_queries: int = 9, seed: int = 0, real_videos: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    videos = [f"{1000 + i}/{5000 + i}" for i in range(n_queries + 3)]
    for n, video in enumerate(videos):
        write = write_mp4 if real_videos else write_fake_video
        write(root / "videos" / f"{video}.mp4", rng, frames=1 + n % 4 if not real_videos else 3 + n % 5)
    rows, queries = [], []
    for n in range(n_queries):
        reference, target = videos[n + 3], videos[n]
        if n == 0:
            reference = videos[1]  # query 0's reference is query 1's target: must be masked out
        rows.append({"pth1": reference, "pth2": target, "edit": f"make it night {n}", "txt1": f"a city {n}",
                     "txt2": f"a city at night {n}", "scores": "[0.3, 0.2]"})  # fmt: skip
        queries.append({"id": str(n), "path": root / "videos" / f"{reference}.mp4", "text": f"make it night {n}",
                        "caption": f"a city {n}", "exclude": (reference,), "target": target})  # fmt: skip
    path = root / "webvid8m-covr_test.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {"gallery": [(v, root / "videos" / f"{v}.mp4") for v in videos[:n_queries]], "queries": queries, "csv": path}


def make_cir_jsonl(root: Path, n_images: int = 16, n_queries: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = [f"img_{i}" for i in range(n_images)]
    for image in ids:
        write_image(root / "images" / f"{image}.jpg", rng)
    lines, queries = [], []
    categories = ["attribute", "object", "complex"]
    for n in range(n_queries):
        reference, *gts = _names(rng, ids, 2 + n % 3)
        entry = {"id": f"q{n}", "reference": reference, "text": f"replace the cat {n}", "ground_truths": gts,
                 "category": categories[n % 3], "subcategory": f"sub{n % 2}"}  # fmt: skip
        lines.append(json.dumps(entry))
        queries.append({"id": f"q{n}", "path": root / "images" / f"{reference}.jpg", "text": entry["text"],
                        "exclude": (reference,), "target": gts[0], "gts": set(gts), "gts_order": gts, "reference": reference,
                        "categories": {"category": categories[n % 3], "subcategory": f"sub{n % 2}"}})  # fmt: skip
    (root / "edir.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "gallery.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    return {"gallery": [(i, root / "images" / f"{i}.jpg") for i in ids], "queries": queries}
