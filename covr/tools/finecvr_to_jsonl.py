"""Example converter into covr's generic JSONL format: FineCVR-1M's test split.

    covr-finecvr-to-jsonl --annotations FineCVR/annotations --out FineCVR/covr

FineCVR's files could not be checked against a real copy; this follows their description:
`<annotations>/test_remaped.txt` (tab-separated, no header: idx, ref, target, cap, source,
class_id, integer video ids) and `<annotations>/id2vdoname_test.json` ({id: video name}); frames
are folders `<frames root>/<video name>/*.jpg`. It writes `<out>/test.jsonl` (one query per line:
id, reference, text, target, category = source) and `<out>/gallery.txt` (every test video: the
gallery is all of them, the reference removed). Evaluate with conf/benchmark/covr_jsonl.yaml:

    python test.py checkpoint=PATH benchmark=covr_jsonl benchmark.covr_jsonl.annotation=FineCVR/covr/test.jsonl \\
        benchmark.covr_jsonl.gallery_file=FineCVR/covr/gallery.txt benchmark.covr_jsonl.media_root=FineCVR/test_frames \\
        benchmark.covr_jsonl.image_extension='' benchmark.covr_jsonl.target_frames=8 benchmark.covr_jsonl.target_frame_strategy=first

An item is then the frame folder `<media_root>/<video name>`; `first` takes its first 8 frames in
name order, as FineCVR's loader is described to. Any other set converts the same way: write one
JSON object per query and, when the gallery is not the union of the targets, a gallery list.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from covr.data.errors import AnnotationError
from covr.tools import HelpFormatter, report_error

COLUMNS = ("idx", "ref", "target", "cap", "source", "class_id")


def convert(annotations: Path, out: Path, split: str = "test") -> tuple[int, int]:
    """Write <out>/<split>.jsonl and <out>/gallery.txt -> (queries, gallery videos)."""
    names_file = annotations / f"id2vdoname_{split}.json"
    names = {str(k): str(v) for k, v in json.loads(names_file.read_text(encoding="utf-8")).items()}
    table = annotations / f"{split}_remaped.txt"
    lines = []
    with open(table, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row:
                continue
            if len(row) != len(COLUMNS):
                raise AnnotationError(f"{table}: line {n}: expected {len(COLUMNS)} tab-separated fields {COLUMNS}, got {len(row)}")
            entry = dict(zip(COLUMNS, row))
            unknown = [entry[c] for c in ("ref", "target") if entry[c] not in names]
            if unknown:
                raise AnnotationError(f"{table}: line {n}: video id(s) {unknown} are not in {names_file.name}")
            query = {"id": entry["idx"], "reference": names[entry["ref"]], "text": entry["cap"], "target": names[entry["target"]]}
            lines.append(json.dumps({**query, "category": entry["source"]}))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    gallery = list(dict.fromkeys(names.values()))
    (out / "gallery.txt").write_text("\n".join(gallery) + "\n", encoding="utf-8")
    return len(lines), len(gallery)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covr-finecvr-to-jsonl", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--annotations", type=Path, required=True, help="folder with test_remaped.txt and id2vdoname_test.json")
    parser.add_argument("--out", type=Path, required=True, help="where test.jsonl and gallery.txt are written")
    parser.add_argument("--split", default="test", help="reads <split>_remaped.txt and id2vdoname_<split>.json, writes <split>.jsonl")
    args = parser.parse_args(argv)
    try:
        queries, videos = convert(args.annotations, args.out, args.split)
    except (OSError, AnnotationError, json.JSONDecodeError) as error:
        return report_error(error)
    print(f"{queries} queries, {videos} gallery videos -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
