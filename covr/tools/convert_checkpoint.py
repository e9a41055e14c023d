"""Convert any supported weights into a covr model folder, loadable offline with `covr.load(folder)`.

    covr-convert-checkpoint SOURCE OUT [--family blip|blip2] [--image-size N]
                            [--tokenizer VOCAB] [--spec FILE] [--vision-weights FILE]

SOURCE: a covr checkpoint (.ckpt with a "covr" entry) or model folder, a LAVIS BLIP / BLIP-2 .pth,
a CoVR / CoVR-2 .ckpt, a bare state dict or .safetensors file, a transformers folder or hub id.
OUT gets config.json, model.safetensors, the tokenizer files and README.md (a model card naming
the source, its sha256 and size, the date, the covr version and what the conversion dropped).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

import covr
from covr.tools import HelpFormatter, report_error
from covr.models.checkpoint_io import CheckpointError, trust_checkpoints
from covr.models.folder import save_model_folder
from covr.models.formats import FAMILY_NAMES, inspect_source
from covr.models.loading import collect_notes, load_model
from covr.models.retriever import ComposedRetriever


def sha256_of(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_origin(source: str) -> list[str]:
    """Model-card lines saying exactly which weights were converted."""
    path = Path(source).expanduser()
    if path.is_file():
        return [f"- source file: `{path.name}` ({path.stat().st_size:,} bytes)", f"- source sha256: `{sha256_of(path)}`"]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        lines = [f"- source folder: `{path.name}`"]
        return lines + [f"  - `{p.name}` ({p.stat().st_size:,} bytes, sha256 `{sha256_of(p)}`)" for p in files if p.suffix in (".safetensors", ".bin", ".pth", ".ckpt")]
    return [f"- source hub id: `{source}` (revision as resolved at conversion time)"]


def model_card(model: ComposedRetriever, source: str, source_kind: str, notes: list[str], out: Path) -> str:
    """A short README.md for the converted folder."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    b = model.backbone
    lines = [
        f"# covr model: {out.name}",
        "",
        f"Composed video retrieval model ({FAMILY_NAMES[b.family]} backbone, query head `{model.query_head}`), "
        f"converted by covr {covr.__version__} on {date} from a {source_kind}.",
        "",
        *describe_origin(source),
        f"- frames: {model.image_size} px; embeddings: {b.num_query_tokens} x {b.embed_dim} per query / target",
        "",
        "## What the conversion did",
        "",
        *([f"- {n}" for n in notes] or ["- nothing was dropped, renamed only"]),
        "",
        "## Use",
        "",
        "```python",
        "import covr",
        "",
        f'model = covr.load("{out.name}")',
        'gallery = model.encode_gallery(["a.mp4", "b.mp4"])',
        'print(model.search(model.encode_query("ref.mp4", "make it red"), gallery, k=5))',
        "```",
        "",
    ]
    return "\n".join(lines)


def _without_interpolations(node: Any) -> Any:
    """Drop Hydra interpolations (`${...}`) from a spec read from a config file: shapes fill them in."""
    if isinstance(node, dict):
        return {k: _without_interpolations(v) for k, v in node.items() if not (isinstance(v, str) and v.startswith("${"))}
    return node


def read_spec(path: Path) -> dict[str, Any]:
    """A backbone spec from YAML / JSON: either the spec itself or a backbone config holding `spec`."""
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    return _without_interpolations(data.get("spec", data))


def convert(source: str, out: Path, **options: Any) -> tuple[ComposedRetriever, list[str]]:
    """Load `source` (any format) and write the covr model folder `out`. Returns (model, notes)."""
    with collect_notes() as notes:
        src = inspect_source(source)
        model = load_model(src, **options)
    save_model_folder(model, out, model_card(model, source, src.describe(), notes, out))
    return model, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covr-convert-checkpoint", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("source", help="weights file, folder or hub id")
    parser.add_argument("out", type=Path, help="covr model folder to write")
    parser.add_argument("--family", choices=sorted(FAMILY_NAMES), help="fail unless the weights are of this backbone family")
    parser.add_argument("--image-size", type=int, help="run size; position embeddings are interpolated to it")
    parser.add_argument("--tokenizer", help="vocabulary for LAVIS / CoVR files (default bert-base-uncased)")
    parser.add_argument("--spec", type=Path, help="backbone spec (YAML / JSON, or a conf/model/backbone/*.yaml) for what shapes cannot tell")
    parser.add_argument("--vision-weights", help="second file holding the ViT (LAVIS BLIP-2 stage-1 checkpoints)")
    parser.add_argument("--no-strict", action="store_true", help="load what fits, logging unmatched keys")
    parser.add_argument("--force", action="store_true", help="write into a non-empty OUT")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow full unpickling of SOURCE (runs any code it carries; only for files you trust)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        return report_error(f"{args.out} is not empty (use --force to write into it)")
    options = dict(family=args.family, image_size=args.image_size, tokenizer=args.tokenizer, vision_weights=args.vision_weights, strict=not args.no_strict)
    if args.spec is not None:
        options["spec"] = read_spec(args.spec)
    try:
        with trust_checkpoints(args.trust_checkpoint):
            model, _ = convert(args.source, args.out, **options)
    except (CheckpointError, ValueError) as err:
        return report_error(err)
    print(f"wrote {args.out} ({FAMILY_NAMES[model.backbone.family]}, head {model.query_head}, {model.image_size} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
