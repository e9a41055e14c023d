"""FashionIQ, val split (test labels are withheld), categories dress / shirt / toptee.

Layout under `root`:
  captions/cap.<category>.<split>.json      [{candidate, target, captions: [c1, c2]}]
  image_splits/split.<category>.<split>.json [image id, ...]  (the category's gallery)
  images/<id>.png

Query text: "c1 and c2" (cleaned by the evaluator like every query text). Gallery: the unique ids
of the category's split file. Whether the reference image stays in the gallery differs between
published codes: CoVR / CoVR-2 remove it (score -10), CLIP4Cir keeps it. `reference_in_gallery`
(default false, CoVR's) makes it explicit, and the results report it. Metrics: R@10 and R@50 per
category, their means, and the mean of the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from covr.eval.datasets.base import Benchmark, GalleryFiles, Protocol, Query, RetrievalTask, expect, field_of, read_json
from covr.eval.metrics import fashioniq_summary

CATEGORIES = ("dress", "shirt", "toptee")
PROTOCOL = Protocol(recall_ks=(1, 5, 10, 50))


def _load_category(root: Path, category: str, split: str, reference_in_gallery: bool) -> RetrievalTask:
    split_file = root / "image_splits" / f"split.{category}.{split}.json"
    ids = read_json(split_file)
    expect(isinstance(ids, list), split_file, "top level", type(ids).__name__, "expected a list of image ids")
    for n, image in enumerate(ids):
        expect(isinstance(image, str) and image != "", split_file, f"entry {n}", str(image), "expected an image id")
    ids = list(dict.fromkeys(ids))  # the official split files repeat no id, but CoVR uses the unique ones anyway
    gallery = GalleryFiles(ids=ids, paths=[root / "images" / f"{image}.png" for image in ids])

    caption_file = root / "captions" / f"cap.{category}.{split}.json"
    entries = read_json(caption_file)
    expect(isinstance(entries, list), caption_file, "top level", type(entries).__name__, "expected a list")
    queries = []
    for n, entry in enumerate(entries):
        where = f"entry {n}"
        candidate = field_of(entry, "candidate", str, caption_file, where)
        target = field_of(entry, "target", str, caption_file, where)
        captions = field_of(entry, "captions", list, caption_file, where)
        valid = len(captions) == 2 and all(isinstance(c, str) for c in captions)
        expect(valid, caption_file, where, entry, "expected two caption strings")
        queries.append(
            Query(
                id=f"{category}-{n}",
                reference=candidate,
                reference_path=root / "images" / f"{candidate}.png",
                text=f"{captions[0].strip()} and {captions[1].strip()}",
                target=target,
                exclude=() if reference_in_gallery else (candidate,),
            )
        )
    return RetrievalTask(f"fashioniq/{split}/{category}", queries, gallery)


def load_fashioniq(
    root: str | Path,
    split: str = "val",
    categories: Sequence[str] = CATEGORIES,
    reference_in_gallery: bool = False,
) -> Benchmark:
    """Read FashionIQ `split` for each category; one retrieval task (own gallery) per category.

    reference_in_gallery: False (CoVR / CoVR-2) takes each query's reference image out of its
    ranking; True (CLIP4Cir's policy) ranks it like any other image."""
    unknown = set(categories) - set(CATEGORIES)
    if unknown or not categories:
        raise ValueError(f"FashionIQ categories must be a non-empty subset of {CATEGORIES}, got {list(categories)}")
    root = Path(root)
    tasks = [_load_category(root, c, split, reference_in_gallery) for c in categories]
    names = {task.name: c for task, c in zip(tasks, categories)}

    def summarise(task_metrics: dict[str, dict[str, float]]) -> dict[str, float]:
        if not all(task_metrics.values()):
            return {}
        return fashioniq_summary({names[t]: m for t, m in task_metrics.items()})

    return Benchmark(
        name="fashioniq",
        split=split,
        tasks=tasks,
        protocol=PROTOCOL,
        summarise=summarise,
        options={"reference_in_gallery": reference_in_gallery, "categories": list(categories)},
    )
