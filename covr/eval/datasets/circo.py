"""CIRCO, splits val and test, against the COCO 2017 unlabeled gallery (~123k images).

Layout under `root`:
  annotations/{val,test}.json   [{id, reference_img_id, target_img_id (val), relative_caption,
                                  shared_concept, gt_img_ids (val)}]
  COCO2017_unlabeled/annotations/image_info_unlabeled2017.json   {"images": [{id, file_name}, ...]}
  COCO2017_unlabeled/unlabeled2017/<file_name>   (12-digit zero-padded "<id>.jpg")

Protocol: the reference is removed from the ranking (the test server rejects it); mAP@{5,10,25,50}
over gt_img_ids and Recall@{1,5,10,50} of target_img_id. CoVR used only `relative_caption`;
`shared_concept` = "prepend" / "append" adds the shared concept to the query text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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

SPLITS = ("val", "test")
PROTOCOL = Protocol(recall_ks=(1, 5, 10, 50), map_ks=(5, 10, 25, 50), submission_k=50)


def read_coco_gallery(root: Path) -> GalleryFiles:
    """The COCO 2017 unlabeled image list: ids are the integer image ids as strings."""
    info_file = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    info = read_json(info_file)
    valid = isinstance(info, dict) and isinstance(info.get("images"), list)
    expect(valid, info_file, "top level", "{...}", 'expected {"images": [...]}')
    ids, paths = [], []
    for n, image in enumerate(info["images"]):
        image_id = field_of(image, "id", int, info_file, f"images[{n}]")
        file_name = image.get("file_name", f"{image_id:012d}.jpg")
        expect(isinstance(file_name, str), info_file, f"images[{n}]", image, "file_name is not a string")
        ids.append(str(image_id))
        paths.append(root / "COCO2017_unlabeled" / "unlabeled2017" / file_name)
    return GalleryFiles(ids, paths)


def _query_text(caption: str, concept: str, shared_concept: str | None) -> str:
    if shared_concept is None:
        return caption
    return f"{concept} {caption}" if shared_concept == "prepend" else f"{caption} {concept}"


def load_circo(
    root: str | Path,
    split: str = "val",
    shared_concept: Literal["prepend", "append"] | None = None,
) -> Benchmark:
    """Read CIRCO `split` ("val" or "test") and the COCO unlabeled gallery."""
    if split not in SPLITS:
        raise ValueError(f"CIRCO split must be one of {SPLITS}, got {split!r}")
    if shared_concept not in (None, "prepend", "append"):
        raise ValueError(f"shared_concept must be None, 'prepend' or 'append', got {shared_concept!r}")
    root = Path(root)
    gallery = read_coco_gallery(root)
    path_of = dict(zip(gallery.ids, gallery.paths))

    annotation_file = root / "annotations" / f"{split}.json"
    entries = read_json(annotation_file)
    expect(isinstance(entries, list), annotation_file, "top level", type(entries).__name__, "expected a list")
    queries, seen = [], set()
    for n, entry in enumerate(entries):
        where = f"entry {n}"
        query_id = str(field_of(entry, "id", int, annotation_file, where))
        expect(query_id not in seen, annotation_file, where, entry, f"duplicate query id {query_id}")
        seen.add(query_id)
        reference = str(field_of(entry, "reference_img_id", int, annotation_file, where))
        problem = f"reference image {reference} is not in the COCO unlabeled list"
        expect(reference in path_of, annotation_file, where, entry, problem)
        caption = field_of(entry, "relative_caption", str, annotation_file, where)
        concept = field_of(entry, "shared_concept", str, annotation_file, where) if shared_concept else ""
        target, ground_truths = None, ()
        if split == "val":
            target = str(field_of(entry, "target_img_id", int, annotation_file, where))
            gts = field_of(entry, "gt_img_ids", list, annotation_file, where)
            valid = bool(gts) and all(isinstance(g, int) for g in gts)
            expect(valid, annotation_file, where, entry, "gt_img_ids must be a non-empty list of integers")
            ground_truths = tuple(dict.fromkeys(str(g) for g in gts))  # official mAP uses gt_img_ids
        queries.append(
            Query(
                id=query_id,
                reference=reference,
                reference_path=path_of[reference],
                text=_query_text(caption, concept, shared_concept),
                target=target,
                ground_truths=ground_truths,
                exclude=(reference,),
            )
        )
    return Benchmark(
        name="circo",
        split=split,
        tasks=[RetrievalTask(f"circo/{split}", queries, gallery)],
        protocol=PROTOCOL,
        summarise=single_task_summary(),
        submission="circo" if split == "test" else None,
        options={"shared_concept": shared_concept},
    )
