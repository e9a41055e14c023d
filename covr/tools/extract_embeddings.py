"""Precompute per-frame target embeddings into an embedding store (covr/data/embedding_store.py).

    covr-extract-embeddings --csv webvid2m-covr_train.csv --video-root ROOT \\
        --model blip2 --out stores/webvid2m-train [--mean-tokens]
    covr-extract-embeddings --folder images/ --checkpoint runs/x/checkpoints/final.ckpt --out stores/cirr
    covr-extract-embeddings --csv webvid2m-covr_train.csv --captions \\
        --model blip2 --out stores/webvid2m-train-captions

The encoder is either weights in any format covr.load reads (--checkpoint; --image-size sets the
run size of backbone-only files such as LAVIS's) or a model config of covr's conf/ (--model NAME =
conf/model/NAME.yaml with the paths of a training run, e.g. COVR_WEIGHTS): the store then carries
exactly the target identity a run with model=NAME expects. --model reads the conf/ of the covr
checkout this package is imported from, or --config-dir; --checkpoint needs no config at all.

--captions writes a text store instead: the encoder's caption features (`encode_text`) of every
cleaned target caption (txt2), keyed by the text, stamped with its `text_identity` (CoVR-2's
frozen caption term; `data.caption_features: store`).

Sharding: --num-shards/--shard-id default to SLURM_NTASKS/SLURM_PROCID or WORLD_SIZE/RANK, so
`srun covr-extract-embeddings ...` splits the work; every shard writes its own files in the same
store. Rerunning the same command resumes (finished rows are skipped). Each task takes the GPU of
its node-local rank (SLURM_LOCALID / LOCAL_RANK), so one task per GPU works with or without
Slurm's per-task GPU binding. Several nodes, 4 GPUs each:

    srun --nodes=2 --ntasks-per-node=4 --gpus-per-node=4 --cpus-per-task=8 \\
        covr-extract-embeddings --csv ... --video-root ... --checkpoint ... --out STORE
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from covr.data.errors import CovrDataError
from covr.data.extract import captions_from_csv, extract_caption_embeddings, extract_embeddings, shard_from_env, videos_from_csv, videos_from_folder
from covr.models.checkpoint_io import CheckpointError
from covr.tools import HelpFormatter, report_error

CHECKOUT_CONF = Path(__file__).resolve().parents[2] / "conf"  # present when covr runs from a checkout (editable install)


def load_encoder(
    checkpoint: str | None,
    model: str | None,
    overrides: list[str],
    conf_dir: Path | None = None,
    trust_checkpoint: bool = False,
    image_size: int | None = None,
):
    """The retriever from weights in any format, or built from <conf_dir>/model/<model>.yaml (+ Hydra
    overrides, e.g. model/backbone=blip2_tiny), composed inside the training config so that paths
    (COVR_WEIGHTS, ...) and covr's resolvers work as in train.py."""
    import covr.models
    from covr.models.checkpoint_io import trust_checkpoints

    if checkpoint:
        with trust_checkpoints(trust_checkpoint):
            return covr.models.load_model(checkpoint, image_size=image_size)
    conf = Path(conf_dir) if conf_dir is not None else CHECKOUT_CONF
    if not (conf / "train.yaml").is_file():
        raise CheckpointError(
            f"--model {model} reads covr's config folder, and {conf} is not one; pass --config-dir <covr checkout>/conf, "
            "or give the weights directly: --checkpoint FILE [--image-size N]"
        )
    import covr.training.config  # noqa: F401  (registers the config resolvers)
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(conf.resolve()), version_base=None):
        cfg = compose("train", overrides=[f"model={model}", *overrides])
    return covr.models.build_retriever(OmegaConf.to_container(cfg.model, resolve=True))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env_shards, env_shard_id = shard_from_env()
    parser = argparse.ArgumentParser(
        prog="covr-extract-embeddings", description=__doc__, formatter_class=HelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="WebVid-CoVR annotation CSV: encode its unique targets (pth2)")
    source.add_argument("--folder", help="encode every video / image under this folder (id = relative path without extension)")
    parser.add_argument("--video-root", help="folder holding <pth>.mp4 (with --csv, unless --captions)")
    parser.add_argument("--include-references", action="store_true", help="with --csv, also encode the pth1 videos")
    parser.add_argument("--captions", action="store_true", help="with --csv, write a text store of the cleaned target captions (txt2)")
    parser.add_argument("--max-words", type=int, default=30, help="with --captions, words kept per caption (data.max_words)")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="weights in any format covr.load reads (covr checkpoint or folder, LAVIS / CoVR file, hub id)")
    model.add_argument("--model", help="a model config of covr's conf/ (conf/model/NAME.yaml: blip2, blip), built as train.py builds it")
    parser.add_argument("--image-size", type=int, help="with --checkpoint: run size of backbone-only weights (LAVIS / CoVR files; CoVR-2 runs at 364)")
    parser.add_argument("--config-dir", type=Path, default=CHECKOUT_CONF, help="with --model: covr's config folder")
    parser.add_argument("--override", action="append", default=[], help="with --model, a Hydra override (repeatable), e.g. model.backbone.image_size=224")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow full unpickling of --checkpoint (runs any code it carries; only for files you trust)")
    parser.add_argument("--out", required=True, help="store folder (created, or resumed when it exists)")
    parser.add_argument("--num-frames", type=int, default=15, help="frames per video, uniformly sampled")
    parser.add_argument("--mean-tokens", action="store_true", help="store the token mean [F, E] instead of [F, Q, E]")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="stored precision")
    parser.add_argument("--num-shards", type=int, default=env_shards, help="processes sharing the work; the default comes from SLURM_NTASKS, else WORLD_SIZE, else 1")
    parser.add_argument("--shard-id", type=int, default=env_shard_id, help="this process's shard; the default comes from SLURM_PROCID, else RANK, else 0")
    parser.add_argument("--batch-size", type=int, default=16, help="videos per forward pass (captions: at least 64 texts)")
    parser.add_argument("--num-workers", type=int, default=4, help="decoding processes")
    parser.add_argument("--device", default=default_device(), help="the default is the GPU of this task's node-local rank (SLURM_LOCALID / LOCAL_RANK), else cpu")
    args = parser.parse_args(argv)
    if args.captions and not args.csv:
        parser.error("--captions needs --csv")
    if args.csv and not args.video_root and not args.captions:
        parser.error("--csv needs --video-root")
    if not 0 <= args.shard_id < args.num_shards:
        parser.error(f"--shard-id {args.shard_id} is not in [0, {args.num_shards})")
    if args.image_size is not None and not args.checkpoint:
        parser.error("--image-size goes with --checkpoint (with --model: --override model.backbone.image_size=N)")
    return args


def default_device(environ: dict[str, str] | None = None) -> str:
    """cuda:<node-local rank modulo visible GPUs> (SLURM_LOCALID, else LOCAL_RANK, else 0), or cpu."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    env = os.environ if environ is None else environ
    local = int(env.get("SLURM_LOCALID", env.get("LOCAL_RANK", 0)))
    return f"cuda:{local % torch.cuda.device_count()}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of `covr-extract-embeddings` (and `python -m covr.tools.extract_embeddings`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        return _captions(args) if args.captions else _targets(args)
    except (CheckpointError, CovrDataError) as err:
        return report_error(err)


def _encoder(args: argparse.Namespace):
    return load_encoder(args.checkpoint, args.model, args.override, args.config_dir, args.trust_checkpoint, args.image_size)


def _targets(args: argparse.Namespace) -> int:
    """The target store of a CSV's videos or a folder's media."""
    if args.csv:
        videos = videos_from_csv(args.csv, args.video_root, include_references=args.include_references)
    else:
        videos = videos_from_folder(args.folder)
    if not videos:
        raise CovrDataError(f"no videos found in {args.csv or args.folder}")
    result = extract_embeddings(
        _encoder(args), videos, args.out, num_frames=args.num_frames, mean_tokens=args.mean_tokens,
        num_shards=args.num_shards, shard_id=args.shard_id, batch_size=args.batch_size,
        num_workers=args.num_workers, dtype=args.dtype, device=args.device,
    )  # fmt: skip
    print(
        f"shard {args.shard_id}/{args.num_shards}: wrote {result.written}, already done {result.already_done}, "
        f"failed {len(result.failed)}; store {args.out} (identity {result.store.identity})"
    )
    return 1 if result.failed else 0


def _captions(args: argparse.Namespace) -> int:
    """--captions: the text store of a CSV's target captions."""
    texts = captions_from_csv(args.csv, args.max_words)
    if not texts:
        raise CovrDataError(f"no target captions (txt2) in {args.csv}")
    result = extract_caption_embeddings(_encoder(args), texts, args.out, batch_size=max(args.batch_size, 64), dtype=args.dtype, device=args.device)
    print(f"captions: wrote {result.written}, already done {result.already_done}; text store {args.out} (identity {result.store.identity})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
