"""Write corrective triplets with a multimodal LLM (ReCALL's "generate" step, arXiv 2602.01639):
for each negative mined by covr-mine-negatives, ask an image-text-to-text model for a modification
text that turns the reference into that negative, check it with yes/no questions, and write
(reference, new text, negative) as a triplet for `data.corrective_triplets`.

    covr-correct-triplets negatives.jsonl --video-root data/toy/videos --model PATH_OR_HUB_ID \\
        --out corrected.jsonl [--per-query 1] [--device cuda]

--model is any transformers `pipeline("image-text-to-text")` model with a chat template, e.g. a
local copy of llava-hf/llava-onevision-qwen2-0.5b-ov-hf or Qwen/Qwen2-VL-2B-Instruct (the weights
are the user's to fetch; HF_HUB_OFFLINE=1 works with a local folder). Both images are the middle
frames of the videos. Prompts (--help shows them in full):

  1. [reference, negative] GENERATE: the model answers with the new modification text;
  2. per question of VERIFY, [reference, negative]: "yes" or "no"; the triplet is `verified` when
     every answer starts with "yes".

Output, one line per mined negative with a non-empty answer (the reader skips "verified": false):

    {"reference": pth1, "edit": new text, "target": negative, "verified": true, "answers": ["yes", ...],
     "row": the query's CSV row, "original_edit": ..., "original_target": ...}

Any other tool may write the same file: covr only reads reference, edit, target and verified.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from covr.data.errors import AnnotationError
from covr.data.jsonl import read_jsonl
from covr.tools import HelpFormatter, report_error

GENERATE = (
    "The first image is a reference. Someone asked for this change to it: \"{edit}\". The second image is a "
    "different result. Write one short modification text (at most 15 words) that turns the first image into the "
    "second image. Answer with the text only."
)
VERIFY = (
    "Applying the change \"{new}\" to the first image gives the second image. Is that true? Answer yes or no.",
    "Is \"{new}\" true of the second image and not of the first one? Answer yes or no.",
)
Generate = Callable[[list[Any], str, int], str]  # (images, prompt, max_new_tokens) -> answer text


def pipeline_generator(model: str, device: str | None = None) -> Generate:
    """A `Generate` over transformers' image-text-to-text pipeline (chat messages with images)."""
    from transformers import pipeline

    pipe = pipeline("image-text-to-text", model=model, device=device)

    def generate(images: list[Any], prompt: str, max_new_tokens: int) -> str:
        content = [{"type": "image", "image": image} for image in images] + [{"type": "text", "text": prompt}]
        out = pipe(text=[{"role": "user", "content": content}], max_new_tokens=max_new_tokens, return_full_text=False)
        return str(out[0]["generated_text"]).strip()

    return generate


def middle_frame_image(path: Path):
    """The middle frame of a video (or an image) as a PIL image."""
    from PIL import Image

    from covr.data.video import load_frames

    return Image.fromarray(load_frames(path, 1, "middle")[0])


def correct(record: dict[str, Any], negative: str, images: list[Any], generate: Generate, max_new_tokens: int = 40) -> dict[str, Any] | None:
    """The corrective triplet of one mined negative, or None when the model gave no text."""
    new = generate(images, GENERATE.format(edit=record["edit"]), max_new_tokens).splitlines()
    new = new[0].strip().strip('"').strip() if new else ""
    if not new:
        return None
    answers = [generate(images, question.format(new=new, edit=record["edit"]), 3) for question in VERIFY]
    verified = all(a.strip().lower().startswith("yes") for a in answers)
    return {"reference": record["reference"], "edit": new, "target": negative, "verified": verified, "answers": answers,
            "row": record.get("row"), "original_edit": record["edit"], "original_target": record.get("target")}  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="covr-correct-triplets", description=__doc__ + "\nGENERATE: " + GENERATE + "\nVERIFY: " + " | ".join(VERIFY),
                                     formatter_class=HelpFormatter)  # fmt: skip
    parser.add_argument("negatives", type=Path, help="JSONL written by covr-mine-negatives")
    parser.add_argument("--video-root", required=True, type=Path, help="folder of <pth>.mp4 videos")
    parser.add_argument("--model", required=True, help="an image-text-to-text model: local folder or hub id")
    parser.add_argument("--out", required=True, type=Path, help="JSONL file of corrective triplets")
    parser.add_argument("--per-query", type=int, default=1, help="mined negatives used per query (best ranked first)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--video-suffix", default=".mp4")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the pipeline's choice)")
    return parser


def main(argv: list[str] | None = None, generate: Generate | None = None) -> int:
    """`generate` replaces the pipeline (another backend); None = --model through transformers."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        records = _read(args.negatives)
        generate = generate or pipeline_generator(args.model, args.device)
    except (OSError, ValueError, AnnotationError) as error:
        return report_error(error)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    counts = {"written": 0, "verified": 0, "no_text": 0}
    with open(args.out, "w", encoding="utf-8") as out:
        for record in records:
            reference = middle_frame_image(args.video_root / f"{record['reference']}{args.video_suffix}")
            for negative in [n["id"] for n in record["negatives"][: args.per_query]]:
                image = middle_frame_image(args.video_root / f"{negative}{args.video_suffix}")
                triplet = correct(record, negative, [reference, image], generate, args.max_new_tokens)
                if triplet is None:
                    counts["no_text"] += 1
                    continue
                out.write(json.dumps(triplet) + "\n")
                counts["written"] += 1
                counts["verified"] += int(triplet["verified"])
    print(f"{counts['written']:,} triplets ({counts['verified']:,} verified), {counts['no_text']:,} negatives without an answer: {args.out}")
    return 0


def _read(path: Path) -> list[dict[str, Any]]:
    """The mined records of covr-mine-negatives' JSONL; a bad line is a one-line error naming it."""
    records = []
    for number, record in read_jsonl(path, "mined negatives file"):
        for field in ("reference", "edit", "negatives"):
            if field not in record:
                raise AnnotationError(f"{path}: line {number} has no {field!r} (expected covr-mine-negatives' output)")
        records.append(record)
    return records


if __name__ == "__main__":
    sys.exit(main())
