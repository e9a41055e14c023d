"""Caption the query references of a benchmark with BLIP-2 (transformers'
Blip2ForConditionalGeneration), into the caption file the evaluator's `caption_file` (and with it
X-Aligner's caption input) reads: one {"id": <reference id>, "caption": ...} per line.

    covr-caption-queries --model Salesforce/blip2-opt-2.7b --reader cirr \\
        --option root=$COVR_DATA/CIRR --option split=val --out $COVR_DATA/CIRR/captions.val.jsonl
    python test.py checkpoint=PATH benchmark=cirr benchmark.cirr.caption_file=$COVR_DATA/CIRR/captions.val.jsonl

The queries are read by the same reader the evaluator uses (--reader and --option KEY=VALUE as in
conf/benchmark/*.yaml), so the ids match; each reference is captioned once (a video by its middle
frame). --model is a hub id or a folder with the model and its processor (HF_HUB_OFFLINE=1 keeps
it local); the captions are written as generated (the evaluator cleans them as it cleans texts).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from covr.data.errors import CovrDataError
from covr.tools import HelpFormatter, add_benchmark_arguments, benchmark_queries, report_error


def reference_images(queries: Sequence) -> list[tuple[str, object]]:
    """(reference id, media) of every distinct reference, in first-seen order (text-only queries have none)."""
    seen: dict[str, object] = {}
    for q in queries:
        if q.reference_path is not None:
            seen.setdefault(q.reference, q.reference_path)
    return list(seen.items())


def middle_frame(item):
    """An image, or a video's middle frame, as a PIL image."""
    from PIL import Image

    from covr.eval.media import load_media

    return Image.fromarray(load_media(item, 1, "middle")[0]).convert("RGB")


def load_captioner(model: str, device: str, dtype: str):
    """(processor, model) of a BLIP-2 captioning checkpoint."""
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    processor = Blip2Processor.from_pretrained(model)
    network = Blip2ForConditionalGeneration.from_pretrained(model, dtype=getattr(torch, dtype)).to(device).eval()
    return processor, network


@torch.inference_mode()
def caption_images(processor, model, images: list, prompt: str = "", max_new_tokens: int = 30, num_beams: int = 1) -> list[str]:
    """Generated captions of PIL images (after `prompt`, when one is given)."""
    # always a text (empty: none), so the input ids are the image tokens (+ BOS) the output starts with
    inputs = processor(images=images, text=[prompt] * len(images), return_tensors="pt", padding=True).to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams)
    if model.config.use_decoder_only_language_model:  # OPT returns the prompt (image tokens included) first
        out = out[:, inputs["input_ids"].shape[1] :]
    return [c.strip() for c in processor.batch_decode(out, skip_special_tokens=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covr-caption-queries", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", required=True, help="BLIP-2 captioning model: hub id or folder (model + processor)")
    add_benchmark_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="caption file to write (.jsonl)")
    parser.add_argument("--prompt", default="", help='text the caption continues (e.g. "a photo of"); empty: none')
    parser.add_argument("--max-new-tokens", type=int, default=30)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="float32", choices=["float32", "float16", "bfloat16"], help="weights dtype (float16 / bfloat16 on a GPU)")
    args = parser.parse_args(argv)
    try:
        references = reference_images(benchmark_queries(args.reader, args.option))
        processor, model = load_captioner(args.model, args.device, args.precision)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            for start in range(0, len(references), args.batch_size):
                batch = references[start : start + args.batch_size]
                captions = caption_images(processor, model, [middle_frame(m) for _, m in batch], args.prompt, args.max_new_tokens, args.num_beams)
                f.writelines(json.dumps({"id": ref, "caption": c}) + "\n" for (ref, _), c in zip(batch, captions))
    except (OSError, ValueError, CovrDataError) as error:
        return report_error(error)
    print(f"{len(references)} captions: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
