"""Mine the negatives that outrank each training query's target (ReCALL's "diagnose" step,
arXiv 2602.01639): run a checkpoint over a train CSV and write, per query whose target is not
ranked first, the candidates above it, as JSONL.

    covr-mine-negatives runs/toy/<run_id>/stage2/checkpoints/final.ckpt \\
        --csv data/toy/toy-covr_train.csv --video-root data/toy/videos --out negatives.jsonl
    covr-mine-negatives CKPT --csv $COVR_DATA/WebVid-CoVR/annotation/webvid2m-covr_train.csv \\
        --video-root $COVR_DATA/WebVid/2M/train --target-store $COVR_DATA/WebVid/2M/blip2-embeddings \\
        --out negatives.jsonl --device cuda

Ranking: the evaluator's WebVid-CoVR reader with protocol `covr` (one gallery column per unique
target video of the CSV, frames pooled uniformly, the query's own reference removed; text cleaned
as in training), so the gallery is every train target. Rule (ReCALL): when the target is not
first, keep up to --keep of the top --top candidates that outrank it, the reference and the target
excluded. Output, one line per such query:

    {"row": CSV data row, "reference": pth1, "edit": raw edit, "target": pth2, "target_rank": 3
     (null: below the ranked list), "negatives": [{"id": pth, "rank": 1, "score": 0.83}, ...]}

covr-correct-triplets turns it into corrective triplets for `data.corrective_triplets`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
from pathlib import Path

from covr.tools import HelpFormatter, report_error


def mine(ranked: list[str], scores: list[float], reference: str, target: str, top: int = 10, keep: int = 5) -> tuple[int | None, list[dict]]:
    """(target's 1-based rank or None when it is not in `ranked`, the mined negatives) of one query
    whose gallery ids are `ranked` best first (with their `scores`)."""
    rank = ranked.index(target) + 1 if target in ranked else None
    above = len(ranked) if rank is None else rank - 1
    negatives = []
    for position in range(min(top, above)):
        candidate = ranked[position]
        if candidate in (reference, target) or any(n["id"] == candidate for n in negatives):
            continue
        negatives.append({"id": candidate, "rank": position + 1, "score": float(scores[position])})
        if len(negatives) == keep:
            break
    return rank, negatives


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="covr-mine-negatives", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("checkpoint", help="weights in any format covr.load reads (a covr checkpoint or model folder, ...)")
    parser.add_argument("--csv", required=True, type=Path, help="train annotation CSV (pth1, pth2, edit, txt1)")
    parser.add_argument("--video-root", required=True, type=Path, help="folder of <pth>.mp4 videos")
    parser.add_argument("--out", required=True, type=Path, help="JSONL file to write")
    parser.add_argument("--top", type=int, default=10, help="candidates looked at above the target")
    parser.add_argument("--keep", type=int, default=5, help="negatives kept per query at most")
    parser.add_argument("--target-frames", type=int, default=15, help="frames per gallery video")
    parser.add_argument("--target-store", help="an EmbeddingStore of the train targets instead of decoding them")
    parser.add_argument("--target-store-identity", help="accept a store of another identity (default: the model's own)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--allow-missing", action="store_true", help="skip queries whose videos are missing instead of failing")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow checkpoints that need full unpickling (runs their code)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _run(args)
    except (OSError, ValueError) as error:
        return report_error(error)


def _run(args: argparse.Namespace) -> int:
    import torch

    from covr.eval import evaluate_benchmark
    from covr.models import load_model
    from covr.models.checkpoint_io import trust_checkpoints

    if args.top < 1 or args.keep < 1:
        raise ValueError(f"--top and --keep must be >= 1 (got {args.top}, {args.keep})")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with trust_checkpoints(args.trust_checkpoint):
        model = load_model(args.checkpoint).to(device).eval()
    benchmark = {"reader": "webvid_covr", "name": "mining", "annotation": str(args.csv), "video_root": str(args.video_root), "split": "train",
                 "protocol": "covr", "target_frames": args.target_frames, "allow_missing": args.allow_missing,
                 "target_store": args.target_store, "target_store_identity": args.target_store_identity}  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        result = evaluate_benchmark(model, {k: v for k, v in benchmark.items() if v is not None}, work, batch_size=args.batch_size,
                                    num_workers=args.num_workers, device=device, save_rankings=True)  # fmt: skip
        rankings = [json.loads(line) for line in open(Path(work) / "mining" / "train" / "rankings.jsonl", encoding="utf-8")]
    with open(args.csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    written = total = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for line in rankings:
            row = rows[int(line["query"])]
            reference, target = row["pth1"].strip(), row["pth2"].strip()
            rank, negatives = mine(line["ids"], line["scores"], reference, target, args.top, args.keep)
            total += len(negatives)
            if negatives:
                record = {"row": int(line["query"]), "reference": reference, "edit": row["edit"], "target": target, "target_rank": rank, "negatives": negatives}
                out.write(json.dumps(record) + "\n")
                written += 1
    print(f"{len(rankings):,} queries ranked (train R@1 {result['metrics'].get('R@1', float('nan')):.2f}); "
          f"{written:,} with negatives above their target, {total:,} negatives: {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
