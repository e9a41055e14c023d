"""CIRR (images from NLVR2), splits val and test1.

Layout under `root`:
  captions/cap.rc2.{split}.json      [{pairid, reference, target_hard, target_soft, caption,
                                       img_set: {id, members: [6 names incl. reference]}}]
  image_splits/split.rc2.{split}.json {name: relative path (from root)}

Protocol: rank the whole split's images with the reference removed; Recall@{1,5,10,50} of
target_hard; Recall_subset@{1,2,3} over the 5 non-reference img_set members; Avg = (R@5 + Rs@1)/2.
"""

from __future__ import annotations

from pathlib import Path

from covr.eval.datasets.base import (
    Benchmark,
    GalleryFiles,
    Protocol,
    Query,
    RetrievalTask,
    expect,
    field_of,
    read_json,
    single_task_summary,
)
from covr.eval.metrics import cirr_average

SPLITS = ("val", "test1")
PROTOCOL = Protocol(recall_ks=(1, 5, 10, 50), subset_ks=(1, 2, 3), submission_k=50)


def load_cirr(root: str | Path, split: str = "val", image_root: str | Path | None = None) -> Benchmark:
    """Read CIRR `split` ("val" or "test1"; "train" also reads) from the official layout.

    Image paths in the split file are relative to `image_root` (default: `root`).
    """
    if split not in SPLITS + ("train",):
        raise ValueError(f"CIRR split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    images = Path(image_root) if image_root is not None else root
    split_file = root / "image_splits" / f"split.rc2.{split}.json"
    names = read_json(split_file)
    expect(isinstance(names, dict), split_file, "top level", type(names).__name__, "expected {name: relative path}")
    for name, rel in names.items():
        expect(isinstance(rel, str) and rel != "", split_file, f"image {name!r}", str(rel), "expected a relative path")
    gallery = GalleryFiles(ids=list(names), paths=[images / rel for rel in names.values()])

    caption_file = root / "captions" / f"cap.rc2.{split}.json"
    entries = read_json(caption_file)
    expect(isinstance(entries, list), caption_file, "top level", type(entries).__name__, "expected a list")
    queries, seen = [], set()
    for n, entry in enumerate(entries):
        where = f"entry {n}"
        pairid = str(field_of(entry, "pairid", (int, str), caption_file, where))
        expect(pairid not in seen, caption_file, where, entry, f"duplicate pairid {pairid}")
        seen.add(pairid)
        reference = field_of(entry, "reference", str, caption_file, where)
        expect(reference in names, caption_file, where, entry, f"reference {reference!r} is not in {split_file.name}")
        members = field_of(field_of(entry, "img_set", dict, caption_file, where), "members", list, caption_file, where)
        expect(reference in members, caption_file, where, entry, "img_set members do not include the reference")
        target = None
        if split != "test1":
            target = field_of(entry, "target_hard", str, caption_file, where)
            valid = target in members and target != reference
            expect(valid, caption_file, where, entry, "target_hard is not a non-reference img_set member")
        queries.append(
            Query(
                id=pairid,
                reference=reference,
                reference_path=images / names[reference],
                text=field_of(entry, "caption", str, caption_file, where),
                target=target,
                exclude=(reference,),
                subset=tuple(str(m) for m in members),
            )
        )
    return Benchmark(
        name="cirr",
        split=split,
        tasks=[RetrievalTask(f"cirr/{split}", queries, gallery)],
        protocol=PROTOCOL,
        summarise=single_task_summary(cirr_average),
        submission="cirr" if split == "test1" else None,
    )
