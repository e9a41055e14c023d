"""Write SoFT's constraint file with a multimodal LLM (a transformers "image-text-to-text"
pipeline): per query, what the wanted target must show (prescriptive) and must not show
(proscriptive), from its reference image and modification text. The evaluator reads the file with
`rerank=soft` (covr.eval.rerank):

    covr-soft-constraints --model Qwen/Qwen2-VL-2B-Instruct --reader cirr \\
        --option root=$COVR_DATA/CIRR --option split=val --out $COVR_DATA/CIRR/soft.val.jsonl
    python test.py checkpoint=PATH benchmark=cirr rerank=soft benchmark.cirr.constraint_file=$COVR_DATA/CIRR/soft.val.jsonl

One line per query: {"id", "prescriptive", "proscriptive", "raw"} ("raw": the model's answer).
The model is asked to answer in two lines, "MUST: ..." and "MUST NOT: ..."; an answer without
them gives empty constraints (counted and printed: SoFT then leaves that query's order as it is).
A model whose processor has a chat template gets the image and prompt as a chat message, any
other (BLIP-2, ...) the prompt as plain text. A video reference shows its middle frame; a
text-only query is asked without an image by a chat model, and left unconstrained otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from covr.data.errors import CovrDataError
from covr.tools import HelpFormatter, add_benchmark_arguments, benchmark_queries, report_error
from covr.tools.caption_queries import middle_frame

PROMPT = (
    "A user searches for an image. They show this reference image and ask for this change: \"{text}\". "
    "Answer in exactly two lines. First line: 'MUST:' followed by what the image they want must show. "
    "Second line: 'MUST NOT:' followed by what it must not show (leave it empty if nothing)."
)
_MUST_NOT = re.compile(r"^\W*must\s*not\s*(?:show|have|contain)?\s*:\s*(.*)$", re.IGNORECASE)
_MUST = re.compile(r"^\W*must\s*(?:show|have|contain)?\s*:\s*(.*)$", re.IGNORECASE)


def parse_constraints(answer: str) -> tuple[str, str] | None:
    """(prescriptive, proscriptive) from a "MUST: ... / MUST NOT: ..." answer; None when it has neither line."""
    positive = negative = None
    for line in answer.splitlines():
        line = line.strip()
        if (match := _MUST_NOT.match(line)) is not None:
            negative = negative if negative is not None else match.group(1).strip()
        elif (match := _MUST.match(line)) is not None:
            positive = positive if positive is not None else match.group(1).strip()
    if positive is None and negative is None:
        return None
    empty = {"", "none", "nothing", "n/a", "-"}
    clean = [("" if x is None or x.strip(" .").lower() in empty else x) for x in (positive, negative)]
    return clean[0], clean[1]


def ask(pipe, image, prompt: str, max_new_tokens: int) -> str:
    """One answer of an image-text-to-text pipeline (as a chat message when the processor has a template)."""
    processor = getattr(pipe, "processor", None)
    if getattr(processor, "chat_template", None):
        content = ([{"type": "image", "image": image}] if image is not None else []) + [{"type": "text", "text": prompt}]
        out = pipe(text=[{"role": "user", "content": content}], max_new_tokens=max_new_tokens, return_full_text=False)
    else:
        out = pipe(images=image, text=prompt, max_new_tokens=max_new_tokens, return_full_text=False)
    first = out[0] if isinstance(out, list) else out
    first = first[0] if isinstance(first, list) else first
    text = first["generated_text"]
    return text if isinstance(text, str) else str(text[-1].get("content", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covr-soft-constraints", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", required=True, help="an image-text-to-text model: hub id or folder (model + processor)")
    add_benchmark_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="constraint file to write (.jsonl)")
    parser.add_argument("--prompt", default=PROMPT, help="question template; {text} is the modification text")
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="float32", choices=["float32", "float16", "bfloat16"], help="weights dtype (float16 / bfloat16 on a GPU)")
    args = parser.parse_args(argv)
    try:
        from transformers import pipeline

        queries = benchmark_queries(args.reader, args.option)
        pipe = pipeline("image-text-to-text", model=args.model, device=args.device, dtype=getattr(torch, args.precision))
        unparsed = imageless = 0
        chat = bool(getattr(getattr(pipe, "processor", None), "chat_template", None))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            for q in queries:
                if q.reference_path is None and not chat:  # a plain-prompt model (BLIP-2) cannot answer without an image
                    imageless += 1
                    f.write(json.dumps({"id": q.id, "prescriptive": "", "proscriptive": "", "raw": ""}) + "\n")
                    continue
                image = middle_frame(q.reference_path) if q.reference_path is not None else None
                answer = ask(pipe, image, args.prompt.format(text=q.text), args.max_new_tokens)
                parsed = parse_constraints(answer)
                unparsed += parsed is None
                positive, negative = parsed or ("", "")
                f.write(json.dumps({"id": q.id, "prescriptive": positive, "proscriptive": negative, "raw": answer}) + "\n")
    except (OSError, ValueError, KeyError, CovrDataError) as error:
        return report_error(error)
    skipped = f", {imageless} text-only queries left unconstrained (the model needs an image)" if imageless else ""
    print(f"{len(queries)} queries ({unparsed} answers without MUST / MUST NOT lines: empty constraints{skipped}): {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
