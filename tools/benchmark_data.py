"""Training-loader throughput against raw decoding of the same videos, measured in the same run.

    python tools/benchmark_data.py [--clips toy|webvid-sized] [--targets frames|store]

Both sides use the same number of worker processes and the same rows.
  raw decode: load_frames() of each sample's videos in a multiprocessing.Pool, results discarded
              (reference: the middle frame; frames mode: also --num-target-frames uniform target
              frames; store mode: targets come from an embedding store, nothing else to decode)
  loader:     WebVidCoVRDataset (decode, train transform of the reference, text cleaning, target
              frames or store lookup) through covr's SlotDataLoader (what train.py uses) with
              collate_covr; torch's DataLoader (a fresh shared-memory segment per batch) is timed
              too, for comparison
Augmentation comes from the data configs themselves: conf/data/toy.yaml (none: the edits talk
about positions, sizes and colours) and conf/data/webvid_covr.yaml (random crop, flip, two
photometric ops); frames travel as the configs send them (uint8).

--clips toy: the toy dataset (64 px MPEG-4, 12 frames) at image size 64.
--clips webvid-sized: synthetic H.264 clips at WebVid's preview size (596x336, 25 fps, 8 s,
  a keyframe every 2 s; textured, moving content), written once, at image size 224.
Worker start-up is excluded from the wall-clock figures (the first batch is not timed).
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from covr.data.collate import collate_covr  # noqa: E402
from covr.data.shared_slots import SlotDataLoader  # noqa: E402
from covr.data.toy import COLUMNS, generate_toy_dataset  # noqa: E402
from covr.tools import HelpFormatter  # noqa: E402
from covr.data.transforms import build_transform  # noqa: E402
from covr.data.video import load_frames  # noqa: E402
from covr.data.webvid_covr import WebVidCoVRDataset  # noqa: E402

_PATHS: list[tuple[str, str]] = []
_NUM_TARGET_FRAMES = 15


def _decode_pair(i: int) -> int:
    reference, target = _PATHS[i]
    a = load_frames(reference, 1, "middle")
    if not _NUM_TARGET_FRAMES:  # targets come from an embedding store: nothing else to decode
        return a.shape[0]
    b = load_frames(target, _NUM_TARGET_FRAMES, "uniform")
    return a.shape[0] + b.shape[0]


def _init_worker(paths: list[tuple[str, str]], num_target_frames: int) -> None:
    global _PATHS, _NUM_TARGET_FRAMES
    _PATHS, _NUM_TARGET_FRAMES = paths, num_target_frames
    torch.set_num_threads(1)


def _cpu_seconds() -> float:
    """CPU time of this process plus its reaped children (pool / DataLoader workers once joined)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def raw_decode_rate(paths: list[tuple[str, str]], workers: int, num_target_frames: int) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second) decoding (reference, target) pairs in ``workers`` processes."""
    cpu = _cpu_seconds()
    pool = multiprocessing.get_context("fork").Pool(workers, _init_worker, (paths, num_target_frames))
    warm = min(len(paths) // 4, 4 * workers)
    pool.map(_decode_pair, range(warm), chunksize=1)  # worker start-up, not timed on the wall clock
    start = time.perf_counter()
    for _ in pool.imap_unordered(_decode_pair, range(warm, len(paths)), chunksize=4):
        pass
    wall = time.perf_counter() - start
    pool.close()
    pool.join()
    return (len(paths) - warm) / wall, len(paths) / (_cpu_seconds() - cpu)


def loader_rate(dataset: WebVidCoVRDataset, workers: int, batch_size: int, slots: bool = True) -> tuple[float, float]:
    """(samples per wall second after the first batch, samples per CPU second overall) of a DataLoader.

    slots: covr's SlotDataLoader (the training loader), else torch's DataLoader."""
    cpu = _cpu_seconds()
    kind = SlotDataLoader if slots else DataLoader
    loader = kind(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate_covr,
                  persistent_workers=False, prefetch_factor=4 if workers else None)  # fmt: skip
    iterator = iter(loader)
    total = len(next(iterator)["index"])
    start, count = time.perf_counter(), 0
    for batch in iterator:
        count += len(batch["index"])
    wall = time.perf_counter() - start
    del iterator  # joins the workers, so their CPU time is counted
    return count / wall, (total + count) / (_cpu_seconds() - cpu)


# ---- data ------------------------------------------------------------------------------------
def write_webvid_sized_clips(folder: Path, num_clips: int, num_rows: int, width: int = 596, height: int = 336,
                             fps: int = 25, seconds: float = 8.0, keyframe_seconds: float = 2.0) -> Path:  # fmt: skip
    """H.264 clips of textured, moving content at WebVid's preview size + a WebVid-CoVR CSV pairing them.

    Returns the CSV path; clips live in ``folder/videos/bench/<i>.mp4``. Clips are written once
    (cached); the CSV is rewritten when it has fewer than ``num_rows`` rows.
    """
    import av

    csv_path = folder / "bench-covr_train.csv"
    if csv_path.is_file() and sum(1 for _ in open(csv_path)) > num_rows:
        return csv_path
    rng = np.random.default_rng(0)
    num_frames = int(fps * seconds)
    yy, xx = np.mgrid[0:height, 0:width]
    for clip in range(num_clips):
        path = folder / "videos" / "bench" / f"{clip}.mp4"
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, 3)
        texture = (rng.normal(0, 24, (height // 4, width // 4, 3))).repeat(4, 0).repeat(4, 1)  # blotchy texture
        background = np.clip(base + texture[:height, :width], 0, 255)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "23", "g": str(int(fps * keyframe_seconds))}
            for t in range(num_frames):
                shift = int(3 * t)  # camera pan
                frame = np.roll(background, shift, axis=1)
                cx, cy = (width * (0.2 + 0.6 * t / num_frames)), height * 0.5
                frame[(xx - cx) ** 2 + (yy - cy) ** 2 < (height * 0.15) ** 2] = rng.integers(0, 256, 3)
                frame = np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8)  # sensor noise
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    rng = np.random.default_rng(1)
    tmp = csv_path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in range(num_rows):
            a, b = int(rng.integers(num_clips)), int(rng.integers(num_clips))
            scores = ", ".join(f"{s:.4f}" for s in rng.uniform(0.2, 0.4, 15))
            writer.writerow({"pth1": f"bench/{a}", "pth2": f"bench/{b}", "txt1": f"a ball rolling on texture {a}",
                             "txt2": f"a ball rolling on texture {b}", "edit": "make the ball another colour",
                             "scores": f"[{scores}]", "sim_txt": 0.8, "sim_vid": 0.7, "person-prob": 0.0})  # fmt: skip
    tmp.replace(csv_path)
    return csv_path


def _store(csv_path: Path, video_root: Path, num_frames: int) -> Path:
    """An embedding store of the CSV's targets, written once by a tiny random BLIP-2."""
    from covr.data.extract import extract_embeddings, videos_from_csv
    from tools.extract_embeddings import load_encoder

    path = csv_path.parent.parent / f".{csv_path.parent.name}-benchmark-store"
    if not (path / "meta.json").is_file():
        encoder = load_encoder(None, "blip2", ["model/backbone=blip2_tiny", "model.xaligner.num_heads=4"])
        extract_embeddings(encoder, videos_from_csv(csv_path, video_root), path, num_frames=num_frames, mean_tokens=True, progress=False)
    return path


def _config_augment(name: str) -> dict:
    """The ``augment`` and ``frame_dtype`` settings of conf/data/<name>.yaml."""
    cfg = OmegaConf.load(REPO / "conf" / "data" / f"{name}.yaml")
    return {"output_dtype": str(cfg.get("frame_dtype", "float32")), **OmegaConf.to_container(cfg.get("augment") or {})}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--clips", choices=["toy", "webvid-sized"], default="toy", help="toy 64-px clips or synthetic WebVid-sized H.264 clips")
    parser.add_argument("--data", default=None, help="data folder (default data/toy or data/.benchmark-webvid-sized; generated if absent)")
    parser.add_argument("--num-workers", type=int, default=2, help="loader worker processes (both loaders)")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per batch")
    parser.add_argument("--image-size", type=int, default=None, help="model input size (default 64 toy, 224 webvid-sized)")
    parser.add_argument("--num-target-frames", type=int, default=15, help="decoded target frames per sample (--targets frames)")
    parser.add_argument("--augment", nargs="+", default=None, choices=["toy", "webvid_covr"],
                        help="data configs whose augmentation to time (default: toy clips both, webvid-sized webvid_covr)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing runs; the best of each is shown")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="rows timed (default: toy 2944; webvid-sized 1024 with --targets store, 256 with frames)")  # fmt: skip
    parser.add_argument("--targets", choices=["frames", "store"], default="frames",
                        help="frames: decode the target videos too; store: targets from an embedding store (CoVR's "
                             "training setting), written once with a tiny random model")  # fmt: skip
    parser.add_argument("--plain-loader", action=argparse.BooleanOptionalAction, default=True,
                        help="also time torch's DataLoader (a fresh shared-memory segment per batch)")
    args = parser.parse_args(argv)

    toy = args.clips == "toy"
    image_size = args.image_size or (64 if toy else 224)
    num_samples = args.num_samples or (2944 if toy else 1024 if args.targets == "store" else 256)
    augments = args.augment or (["toy", "webvid_covr"] if toy else ["webvid_covr"])
    if toy:
        data = Path(args.data or REPO / "data" / "toy")
        if not (data / "toy-covr_train.csv").is_file():
            print(f"generating toy data in {data}")
            generate_toy_dataset(data)
        csv_path = data / "toy-covr_train.csv"
    else:
        data = Path(args.data or REPO / "data" / ".benchmark-webvid-sized")
        if not (data / "videos" / "bench" / "47.mp4").is_file():
            print(f"writing WebVid-sized clips in {data} (once, ~2 min)")
        csv_path = write_webvid_sized_clips(data, num_clips=48, num_rows=max(num_samples + args.batch_size, 256))
    video_root = data / "videos"
    store = _store(csv_path, video_root, args.num_target_frames) if args.targets == "store" else None

    datasets = {}
    for name in augments:
        options = _config_augment(name)
        dataset = WebVidCoVRDataset(
            csv_path, video_root, "train", transform=build_transform(True, image_size, **options), image_size=image_size,
            frame_dtype=options["output_dtype"], num_target_frames=args.num_target_frames, epoch_mode="all_triplets",
            target_source=args.targets, store=store,
        )  # fmt: skip
        dataset.rows = dataset.rows[: num_samples + args.batch_size]
        datasets[f"{name} aug, {options['output_dtype']}"] = dataset
    ann = dataset.annotations
    paths = [(dataset.video_path(ann.reference_id(r)), dataset.video_path(ann.target_id(r))) for r in dataset.rows.tolist()]

    frames = f"1+{args.num_target_frames}" if store is None else "1 (targets from the store)"
    print(f"clips={args.clips} workers={args.num_workers} batch={args.batch_size} image_size={image_size} "
          f"frames/sample={frames} rows={len(paths)} cpus={os.cpu_count()}; best of {args.repeats} interleaved runs")  # fmt: skip
    runs = [(f"covr loader ({name})", dataset, True) for name, dataset in datasets.items()]
    if args.plain_loader:
        runs += [(f"torch DataLoader ({name})", dataset, False) for name, dataset in datasets.items()]
    raw, loaded = (0.0, 0.0), {name: (0.0, 0.0) for name, _, _ in runs}
    start = time.perf_counter()
    for repeat in range(args.repeats):  # interleaved, best of: robust to other load on a shared machine
        decoded_target_frames = args.num_target_frames if store is None else 0
        raw = tuple(map(max, raw, raw_decode_rate(paths, args.num_workers, decoded_target_frames)))
        for name, dataset, slots in runs:
            loaded[name] = tuple(map(max, loaded[name], loader_rate(dataset, args.num_workers, args.batch_size, slots)))
        print(f"[{time.perf_counter() - start:.0f} s] run {repeat + 1}/{args.repeats} of every loader timed", file=sys.stderr, flush=True)
    width = max(len(name) for name in loaded)
    print(f"{'':{width}}  samples/s (wall)  samples per CPU-second  ratio to raw (wall / CPU)")
    print(f"{'raw decode':{width}}  {raw[0]:16.1f}  {raw[1]:22.1f}")
    for name, (wall, cpu) in loaded.items():
        print(f"{name:{width}}  {wall:16.1f}  {cpu:22.1f}  {wall / raw[0]:10.2f} / {cpu / raw[1]:.2f}")
    print("CPU-second figures count every process (main + workers) and are robust to other load on the machine; "
          "wall figures exclude worker start-up.")


if __name__ == "__main__":
    main()
