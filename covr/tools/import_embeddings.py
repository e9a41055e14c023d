"""Import released embeddings (CoVR's per-video .pth files, CIRCO's all_embs.pt) into a covr embedding store.

    covr-import-embeddings --pth-folder WebVid/8M/released-blip2-embeddings --family blip2 \\
        --csv webvid8m-covr_test.csv --identity-from blip2_finetune_coco.pth --out stores/webvid8m-covr2
    covr-import-embeddings --all-embs CIRCO/released-blip2-embeddings/all_embs.pt --family blip2 \\
        --coco-info CIRCO/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json --identity covr2-blip2 --out stores/circo

Before anything trains or evaluates it prints a completeness report (ids expected, imported, missing,
unreadable) and writes every missing / unreadable id to <out>/import-report.txt; it exits with 1
when any expected id is missing or unreadable, unless --allow-missing. The store's identity is the
target identity of the model whose target path produced the embeddings (--identity-from: any
weights covr.load reads), or a name given with --identity (evaluation then names it with
`target_store_identity`, training with a matching model).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from covr.data.annotations import read_webvid_covr_csv
from covr.data.errors import CovrDataError
from covr.data.released import TOKEN_DIMS, ImportReport, import_frames, per_item_files, read_all_embs, read_per_item, read_table
from covr.tools import HelpFormatter, report_error


def expected_ids(args: argparse.Namespace) -> list[str] | None:
    """The ids the store must hold: a CSV's targets (and references), a COCO image list, or None."""
    if args.csv:
        ann = read_webvid_covr_csv(args.csv)
        codes = np.concatenate([ann.target, ann.reference]) if args.include_references else ann.target
        _, first = np.unique(codes, return_index=True)
        return [ann.video_ids[c] for c in codes[np.sort(first)].tolist()]
    if args.coco_info:
        info = json.loads(Path(args.coco_info).read_text(encoding="utf-8"))
        return [str(image["id"]) for image in info["images"]]
    return None


def identity_of(args: argparse.Namespace) -> str:
    if args.identity:
        return args.identity
    from covr.models import load_model

    return load_model(args.identity_from).target_identity


def run(args: argparse.Namespace) -> ImportReport:
    """Import per `args` (see parse_args) and return the report."""
    expected = expected_ids(args)
    if args.pth_folder:
        files = per_item_files(args.pth_folder)
        expected = expected if expected is not None else list(files)
        present = [i for i in expected if i in files]
        items, extra = read_per_item(files, present, args.family), len(set(files) - set(expected))
        first = next((frames for _, frames, _ in read_per_item(files, present, args.family) if frames is not None), None)
    else:
        table = read_all_embs(args.all_embs, args.family)
        expected = expected if expected is not None else list(table)
        present = [i for i in expected if i in table]
        items, extra = read_table(table, present, args.family, str(args.all_embs)), len(set(table) - set(expected))
        first = next((frames for _, frames, _ in read_table(table, present, args.family, str(args.all_embs)) if frames is not None), None)
    if first is None:
        raise CovrDataError(f"none of the {len(expected):,} expected ids has an embedding in {args.pth_folder or args.all_embs}")
    shape = tuple(first.shape[1 : 1 + TOKEN_DIMS[args.family]])
    report = import_frames(items, expected, args.out, identity_of(args), args.family, shape, args.max_frames, args.dtype, args.mean_tokens)
    report.extra = extra
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="covr-import-embeddings", description=__doc__, formatter_class=HelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pth-folder", help="one <id>.pth per video / image below this folder (CoVR's release)")
    source.add_argument("--all-embs", help="CIRCO's all_embs.pt ({'ids', 'embs'})")
    parser.add_argument("--family", required=True, choices=sorted(TOKEN_DIMS), help="blip2: [F, Q, E] per video; blip: [F, E]")
    expected = parser.add_mutually_exclusive_group()
    expected.add_argument("--csv", help="WebVid-CoVR CSV whose target videos (pth2) the store must hold")
    expected.add_argument("--coco-info", help="image_info_unlabeled2017.json whose images the store must hold (CIRCO)")
    parser.add_argument("--include-references", action="store_true", help="with --csv, also expect the pth1 videos")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--identity", help="the store's identity (a name of your choice)")
    who.add_argument("--identity-from", help="weights whose target path produced the embeddings (their target identity)")
    parser.add_argument("--out", required=True, help="store folder (created; rerunning rewrites the same rows)")
    parser.add_argument("--max-frames", type=int, default=15, help="frames per video the store holds (CoVR: 15)")
    parser.add_argument("--mean-tokens", action="store_true", help="store BLIP-2 token means [F, E] (the covr2 WebVid protocol needs tokens)")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="stored precision")
    parser.add_argument("--allow-missing", action="store_true", help="exit 0 even when expected ids are missing or unreadable")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        report = run(args)
    except CovrDataError as error:
        return report_error(error)
    listing = report.write(Path(args.out) / "import-report.txt")
    print(report.summary())
    for item, reason in report.unreadable[:5]:
        print(f"  unreadable {item}: {reason}")
    print(f"every missing / unreadable id: {listing}")
    return 0 if args.allow_missing or not (report.missing or report.unreadable) else 1


if __name__ == "__main__":
    sys.exit(main())
