"""Training-loader throughput against raw decoding of the same videos, on the toy data.

    python tools/benchmark_data.py [--data data/toy] [--num-workers 2] [--image-size 64]

Both sides use the same number of worker processes and the same rows: each sample is one
reference frame (middle) + ``--num-target-frames`` uniformly sampled target frames.
  raw decode: load_frames() of both videos in a multiprocessing.Pool, results discarded
  loader:     WebVidCoVRDataset (train transform, target test transform, text cleaning)
              through a torch DataLoader with collate_covr
Worker start-up is excluded from both (first batch / pool warm-up is not timed).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from covr.data.collate import collate_covr  # noqa: E402
from covr.data.toy import generate_toy_dataset  # noqa: E402
from covr.data.video import load_frames  # noqa: E402
from covr.data.webvid_covr import WebVidCoVRDataset  # noqa: E402

_PATHS: list[tuple[Path, Path]] = []
_NUM_TARGET_FRAMES = 15


def _decode_pair(i: int) -> int:
    reference, target = _PATHS[i]
    a = load_frames(reference, 1, "middle")
    if not _NUM_TARGET_FRAMES:  # targets come from an embedding store: nothing else to decode
        return a.shape[0]
    b = load_frames(target, _NUM_TARGET_FRAMES, "uniform")
    return a.shape[0] + b.shape[0]


def _init_worker(paths: list[tuple[Path, Path]], num_target_frames: int) -> None:
    global _PATHS, _NUM_TARGET_FRAMES
    _PATHS, _NUM_TARGET_FRAMES = paths, num_target_frames
    torch.set_num_threads(1)


def _cpu_seconds() -> float:
    """CPU time of this process plus its reaped children (pool / DataLoader workers once joined)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def raw_decode_rate(paths: list[tuple[Path, Path]], workers: int, num_target_frames: int) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second) decoding (reference, target) pairs in ``workers`` processes."""
    cpu = _cpu_seconds()
    pool = multiprocessing.get_context("fork").Pool(workers, _init_worker, (paths, num_target_frames))
    warm = min(len(paths), 4 * workers)
    pool.map(_decode_pair, range(warm), chunksize=1)  # worker start-up, not timed on the wall clock
    start = time.perf_counter()
    for _ in pool.imap_unordered(_decode_pair, range(warm, len(paths)), chunksize=8):
        pass
    wall = time.perf_counter() - start
    pool.close()
    pool.join()
    return (len(paths) - warm) / wall, len(paths) / (_cpu_seconds() - cpu)


def loader_rate(dataset: WebVidCoVRDataset, workers: int, batch_size: int) -> tuple[float, float]:
    """(samples per wall second after the first batch, samples per CPU second overall) of the training DataLoader."""
    cpu = _cpu_seconds()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate_covr,
                        persistent_workers=False, prefetch_factor=4 if workers else None)  # fmt: skip
    iterator = iter(loader)
    total = len(next(iterator)["index"])
    start, count = time.perf_counter(), 0
    for batch in iterator:
        count += len(batch["index"])
    wall = time.perf_counter() - start
    del iterator  # joins the workers, so their CPU time is counted
    return count / wall, (total + count) / (_cpu_seconds() - cpu)


def _toy_store(data: Path, num_frames: int) -> Path:
    """An embedding store of the toy train targets, written once by a tiny random BLIP-2."""
    from covr.data.extract import extract_embeddings, videos_from_csv
    from tools.extract_embeddings import load_encoder

    path = data.parent / f".{data.name}-benchmark-store"
    if not (path / "meta.json").is_file():
        encoder = load_encoder(None, "blip2", ["model/backbone=blip2_tiny", "model.xaligner.num_heads=4"])
        videos = videos_from_csv(data / "toy-covr_train.csv", data / "videos")
        extract_embeddings(encoder, videos, path, num_frames=num_frames, mean_tokens=True, progress=False)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO / "data" / "toy"), help="toy dataset folder (generated if absent)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64, help="model input size (toy videos are 64 px)")
    parser.add_argument("--num-target-frames", type=int, default=15)
    parser.add_argument("--frame-dtype", nargs="+", default=["float32", "uint8"], help="loader frame dtypes to time")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing runs; the best of each is shown")
    parser.add_argument("--num-samples", type=int, default=1024, help="rows timed (after the first batch)")
    parser.add_argument("--targets", choices=["frames", "store"], default="frames",
                        help="frames: decode the target videos too; store: targets from an embedding store (CoVR's "
                             "training setting), written once with a tiny random model")  # fmt: skip
    args = parser.parse_args(argv)

    data = Path(args.data)
    if not (data / "toy-covr_train.csv").is_file():
        print(f"generating toy data in {data}")
        generate_toy_dataset(data)
    rows = slice(0, args.num_samples + args.batch_size)
    store = _toy_store(data, args.num_target_frames) if args.targets == "store" else None
    datasets = {
        dtype: WebVidCoVRDataset(
            data / "toy-covr_train.csv", data / "videos", "train", image_size=args.image_size, frame_dtype=dtype,
            num_target_frames=args.num_target_frames, epoch_mode="all_triplets",
            target_source=args.targets, store=store,
        )
        for dtype in args.frame_dtype
    }  # fmt: skip
    for dataset in datasets.values():
        dataset.rows = dataset.rows[rows]
    ann, dataset = dataset.annotations, next(iter(datasets.values()))
    paths = [(dataset.video_path(ann.reference_id(r)), dataset.video_path(ann.target_id(r))) for r in dataset.rows.tolist()]

    frames = f"1+{args.num_target_frames}" if store is None else "1 (targets from the store)"
    print(f"workers={args.num_workers} batch={args.batch_size} image_size={args.image_size} "
          f"frames/sample={frames} rows={len(paths)} cpus={os.cpu_count()}; "
          f"best of {args.repeats} interleaved runs")  # fmt: skip
    raw, loaded = (0.0, 0.0), dict.fromkeys(datasets, (0.0, 0.0))
    for _ in range(args.repeats):  # interleaved, best of: robust to other load on a shared machine
        decoded_target_frames = args.num_target_frames if store is None else 0
        raw = tuple(map(max, raw, raw_decode_rate(paths, args.num_workers, decoded_target_frames)))
        for dtype, dataset in datasets.items():
            loaded[dtype] = tuple(map(max, loaded[dtype], loader_rate(dataset, args.num_workers, args.batch_size)))
    print("                         samples/s (wall)   samples per CPU-second   ratio to raw (wall / CPU)")
    print(f"raw decode               {raw[0]:10.1f}         {raw[1]:10.1f}")
    for dtype, (wall, cpu) in loaded.items():
        print(f"training loader {dtype:>7}  {wall:10.1f}         {cpu:10.1f}              {wall / raw[0]:.2f} / {cpu / raw[1]:.2f}")
    print("raw decode = load_frames of both videos in a process pool; loader = dataset (decode, train transform "
          "for the reference, test transform for the target, text cleaning) + collate_covr through a DataLoader; "
          "same workers, same rows. CPU-second figures count every process (main + workers) and are robust "
          "to other load on the machine; wall figures exclude worker start-up.")

if __name__ == "__main__":
    main()
