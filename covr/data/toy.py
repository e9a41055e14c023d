"""Toy composed-video-retrieval data in the exact WebVid-CoVR layout, for tests and smoke runs.

    python -m covr.data.toy --out DIR

writes ``DIR/videos/<page_dir>/<videoid>.mp4`` and ``DIR/toy-covr_{train,val,test}.csv`` with the
official columns. A video shows one shape (size, colour, shape, motion, background); an edit
changes one attribute ("make the circle red", "change the background to white"). Every
reference video gets several different edits and every edit text applies to many references,
so neither input alone identifies the target. val / test have unique targets (one query per
target, distinct scenes: a perfect model reaches R@1 = 100) and their own videos.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from covr.data.toy_render import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, SIZES, Scene, all_scenes, render, write_mp4

COLUMNS = ("pth1", "pth2", "txt1", "txt2", "edit", "scores", "sim_txt", "sim_vid", "person-prob")
SPLIT_OFFSETS = {"train": 1_000_000, "val": 2_000_000, "test": 3_000_000}  # videoid ranges, disjoint per split
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# edit kind -> templates; {shape} is the reference's shape, {value} the new attribute value
TEMPLATES = {
    "colour": ["make the {shape} {value}", "change the color of the {shape} to {value}", "turn it {value}"],
    "background": ["change the background to {value}", "put it on a {value} background"],
    "motion": ["make it move {value}", "have the {shape} move {value} instead"],
    "shape": ["replace the {shape} with a {value}", "turn the {shape} into a {value}"],
    "size": ["make the {shape} {value}", "make it {value}"],
}
CHOICES = {"colour": list(COLOURS), "background": list(BACKGROUNDS), "motion": list(MOTIONS), "shape": list(SHAPES)}
SIZE_WORDS = {"large": "bigger", "small": "smaller"}  # size edit word for the *new* size


def random_edit(reference: Scene, rng: np.random.Generator) -> tuple[str, Scene]:
    """A random one-attribute edit of ``reference`` -> (edit text, target scene)."""
    kind = list(TEMPLATES)[rng.integers(len(TEMPLATES))]
    if kind == "size":
        value = "large" if reference.size == "small" else "small"
        target, word = reference.replace(size=value), SIZE_WORDS[value]
    else:
        field = "colour" if kind == "colour" else kind
        options = [v for v in CHOICES[kind] if v != getattr(reference, field)]
        word = options[rng.integers(len(options))]
        target = reference.replace(**{field: word})
    template = TEMPLATES[kind][rng.integers(len(TEMPLATES[kind]))]
    return template.format(shape=reference.shape, value=word), target


def distinct_edits(reference: Scene, count: int, rng: np.random.Generator, exclude: set[Scene] = frozenset()) -> list[tuple[str, Scene]]:
    """Up to ``count`` edits of one reference with pairwise different targets, none in ``exclude``."""
    out, seen = [], set(exclude)
    for _ in range(50 * count):
        if len(out) == count:
            break
        text, target = random_edit(reference, rng)
        if target not in seen:
            seen.add(target)
            out.append((text, target))
    return out


class _VideoWriter:
    """Allocates ids ``<page_dir>/<videoid>`` and renders each video once."""

    def __init__(self, out: Path, split: str, rng: np.random.Generator, num_frames: int, image_size: int) -> None:
        self.out, self.next_id, self.rng = out, SPLIT_OFFSETS[split], rng
        self.num_frames, self.image_size = num_frames, image_size

    def new(self, scene: Scene) -> str:
        video_id, self.next_id = self.next_id, self.next_id + 1
        page = video_id // 100 * 100
        pth = f"{page:07d}_{page + 99:07d}/{video_id:07d}"
        jitter = tuple(self.rng.uniform(-0.06, 0.06, size=2))
        write_mp4(render(scene, self.num_frames, self.image_size, jitter), self.out / "videos" / f"{pth}.mp4")
        return pth


def _row(ref: tuple[str, Scene], target: tuple[str, Scene], edit: str, rng: np.random.Generator, score_frames: int) -> dict:
    scores = np.round(0.3 + 0.03 * rng.standard_normal(score_frames), 4)
    return {
        "pth1": ref[0], "pth2": target[0], "txt1": ref[1].caption(), "txt2": target[1].caption(), "edit": edit,
        "scores": "[" + ", ".join(f"{s:.4f}" for s in scores) + "]",
        "sim_txt": f"{rng.uniform(0.6, 0.95):.4f}", "sim_vid": f"{rng.uniform(0.6, 0.95):.4f}", "person-prob": "0.0",
    }  # fmt: skip


def _train_rows(videos: _VideoWriter, rng, num_triplets: int, instances: int, score_frames: int) -> list[dict]:
    """Every scene rendered ``instances`` times; references cycle so each gets ~num_triplets / #videos edits."""
    pool = {scene: [videos.new(scene) for _ in range(instances)] for scene in all_scenes()}
    references = [(pth, scene) for scene, paths in pool.items() for pth in paths]
    rng.shuffle(references)
    per_reference = max(3, -(-num_triplets // len(references)))  # several edits for every reference used
    references = references[: -(-num_triplets // per_reference)]
    rows = []
    for pth, scene in references:
        for edit, target in distinct_edits(scene, per_reference, rng):
            rows.append(_row((pth, scene), (pool[target][rng.integers(instances)], target), edit, rng, score_frames))
    # trim to num_triplets, never leaving a reference with fewer than two edits
    per_ref = {pth: per_reference for pth, _ in references}
    keep, excess = np.ones(len(rows), dtype=bool), len(rows) - num_triplets
    for i in rng.permutation(len(rows)):
        if excess <= 0:
            break
        if per_ref[rows[i]["pth1"]] > 2:
            keep[i], excess = False, excess - 1
            per_ref[rows[i]["pth1"]] -= 1
    return [row for row, kept in zip(rows, keep) if kept]


def _eval_rows(videos: _VideoWriter, rng, num_queries: int, edits_per_reference: int, score_frames: int) -> list[dict]:
    """Unique targets with distinct scenes; each reference video serves ``edits_per_reference`` queries."""
    used: set[Scene] = set()
    rows: list[dict] = []
    scenes = all_scenes()
    for _ in range(20 * num_queries + 1000):
        if len(rows) == num_queries:
            return rows
        reference = scenes[rng.integers(len(scenes))]
        left = num_queries - len(rows)
        take = left if left - min(edits_per_reference, left) == 1 else min(edits_per_reference, left)  # no lone last query
        edits = distinct_edits(reference, take, rng, exclude=used)
        if len(edits) < take:
            continue  # this reference has too few fresh targets left
        ref_pth = videos.new(reference)
        for edit, target in edits:
            used.add(target)
            rows.append(_row((ref_pth, reference), (videos.new(target), target), edit, rng, score_frames))
    raise ValueError(f"found only {len(rows)} of {num_queries} queries with distinct target scenes; ask for fewer")


def generate_toy_dataset(
    out: str | Path,
    seed: int = 0,
    num_train: int = 3000,
    num_val: int = 60,
    num_test: int = 150,
    train_instances: int = 2,
    edits_per_reference: int = 3,
    num_frames: int = 12,
    image_size: int = 64,
    score_frames: int = 15,
) -> dict[str, Path]:
    """Write the toy dataset under ``out``; returns {"train"/"val"/"test": csv path, "video_root": folder}.

    Train renders every scene ``train_instances`` times and gives each reference it uses at least
    three edits with different targets (a scene has 13 possible one-attribute edits, which caps
    num_train at about 13 x 432 x train_instances). val / test: num_val / num_test queries with
    distinct target scenes (at most 432), ``edits_per_reference`` queries per reference video.
    """
    if num_val > len(all_scenes()) or num_test > len(all_scenes()):
        raise ValueError(f"val/test need distinct target scenes: at most {len(all_scenes())} queries each")
    if image_size % 2:
        raise ValueError(f"image_size must be even (yuv420p video), got {image_size}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    paths: dict[str, Path] = {"video_root": out / "videos"}
    for split in ("train", "val", "test"):
        videos = _VideoWriter(out, split, rng, num_frames, image_size)
        if split == "train":
            rows = _train_rows(videos, rng, num_train, train_instances, score_frames)
        else:
            rows = _eval_rows(videos, rng, num_val if split == "val" else num_test, edits_per_reference, score_frames)
        paths[split] = out / f"toy-covr_{split}.csv"
        with open(paths[split], "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return paths


def toy_vocabulary() -> list[str]:
    """A complete WordPiece vocabulary for every toy text after clean_text (whole words as tokens).

    Specials first ([PAD]=0, [UNK], [CLS], [SEP], [MASK]), then every word the templates and
    captions use, then single characters and their ## continuations so nothing maps to [UNK].
    """
    words = {"a", "moving", "on", "background"}  # the caption's fixed words (Scene.caption)
    for values in (SIZES, COLOURS, SHAPES, MOTIONS, BACKGROUNDS, SIZE_WORDS.values()):
        words.update(values)
    for templates in TEMPLATES.values():
        for template in templates:
            words.update(w for w in template.split() if not w.startswith("{"))
    characters = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(",-'?/&+")
    pieces = characters + ["##" + c for c in characters[:36]]
    return SPECIAL_TOKENS + sorted(words) + [p for p in pieces if p not in words]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the toy WebVid-CoVR-format dataset.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=3000, help="train triplets")
    parser.add_argument("--num-val", type=int, default=60, help="val queries (unique targets)")
    parser.add_argument("--num-test", type=int, default=150, help="test queries (unique targets)")
    parser.add_argument("--num-frames", type=int, default=12, help="frames per video")
    parser.add_argument("--image-size", type=int, default=64, help="frame side in pixels (even)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = generate_toy_dataset(
        args.out, args.seed, args.num_train, args.num_val, args.num_test, num_frames=args.num_frames, image_size=args.image_size
    )
    print(f"toy dataset in {args.out} ({time.perf_counter() - start:.1f} s): " + ", ".join(f"{k}={v}" for k, v in paths.items()))


if __name__ == "__main__":
    main()
