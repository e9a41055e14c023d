"""The generic JSONL format for any other composed video set (FineCVR-1M through its converter
example: frame folders, a time span of a longer video), frame order, and every benchmark config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transcriptions_video as TV
from helpers_eval import ref_recall
from layouts_video import clip_video
from omegaconf import OmegaConf
from PIL import Image

from conftest import REPO, open_xaligner, tiny_model_config
from covr.data.toy_render import write_mp4
from covr.data.transforms import TestTransform
from covr.data.video import load_frames
from covr.eval import evaluate_benchmark
from covr.eval.datasets import READERS
from covr.eval.evaluator import EVALUATOR_KEYS
from covr.models import build_retriever
from covr.tools.finecvr_to_jsonl import convert


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return open_xaligner(build_retriever(tiny_model_config())).eval()


def write_frames(folder: Path, rng, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(count):
        colour = rng.integers(20, 236, size=3).astype(np.uint8)
        Image.fromarray(np.broadcast_to(colour, (12, 12, 3)).copy()).save(folder / f"img_{t + 1:05d}.jpg")


def first_frames(model, folder: Path, count: int) -> torch.Tensor:
    """The first `count` frames of a folder in name order, read with PIL: [1, F, 3, S, S]."""
    files = sorted(folder.glob("*.jpg"))[:count]
    return TestTransform(model.image_size)(np.stack([np.array(Image.open(f).convert("RGB")) for f in files]))[None]


def test_finecvr_through_the_converter_and_the_generic_reader(model, tmp_path):
    rng = np.random.default_rng(3)
    names = {str(i): f"{['FineGym', 'Diving', 'Yoga'][i % 3]}_{i:04d}" for i in range(9)}
    for name in names.values():
        write_frames(tmp_path / "test_frames" / name, rng, count=3 + int(name[-1]) % 3)
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "id2vdoname_test.json").write_text(json.dumps(names))
    rows = [(n, n % 9, (n * 4 + 1) % 9, f"Do it {n} times faster (2x).", ["FineGym", "Diving"][n % 2], n % 4) for n in range(7)]
    (ann / "test_remaped.txt").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
    assert convert(ann, tmp_path / "covr") == (7, 9)
    clip_video(tmp_path / "long.mp4", rng, frames=20, fps=5)  # query 7's reference: seconds 1 to 2.5 of a longer video
    with open(tmp_path / "covr" / "test.jsonl", "a") as f:
        f.write(json.dumps({"id": "span", "reference": "long_part", "text": "make it slower", "target": names["2"]}) + "\n")
    (tmp_path / "media.json").write_text(json.dumps({"long_part": {"path": "../long.mp4", "start": 1.0, "end": 2.5}}))
    cfg = {
        "reader": "cir_jsonl", "name": "finecvr", "annotation": str(tmp_path / "covr/test.jsonl"), "media_root": str(tmp_path / "test_frames"),
        "media_file": str(tmp_path / "media.json"), "gallery_file": str(tmp_path / "covr/gallery.txt"), "protocol": "covr",
        "target_frames": 2, "target_frame_strategy": "first", "query_frames": 2, "query_frame_strategy": "first",
    }  # fmt: skip
    with pytest.raises(Exception, match="'first' is for frame folders"):  # the span's video cannot take "first"
        evaluate_benchmark(model, cfg, tmp_path / "out", batch_size=4, num_workers=0)
    result = evaluate_benchmark(model, {**cfg, "query_frame_strategy": "uniform"}, tmp_path / "out", batch_size=4, num_workers=0)
    transform = TestTransform(model.image_size)
    with torch.no_grad():
        gallery = {n: model.encode_target(first_frames(model, tmp_path / "test_frames" / n, 2))[0].mean(0) for n in names.values()}
        queries = []
        for ref, text in [(names[str(r[1])], r[3]) for r in rows] + [("long_part", "make it slower")]:
            if ref == "long_part":
                frames = transform(load_frames(tmp_path / "long.mp4", 2, "uniform", span=(1.0, 2.5)))[None]
            else:
                files = uniform_files(tmp_path / "test_frames" / ref, 2)
                frames = transform(np.stack([np.array(Image.open(f).convert("RGB")) for f in files]))[None]
            queries.append((ref, model.encode_query(frames, [TV.pre_caption(text)])[0].mean(0)))
    ranked = [[n for n in sorted(gallery, key=lambda n: (-float(q @ gallery[n]), list(gallery).index(n))) if n != ref] for ref, q in queries]
    targets = [names[str(r[2])] for r in rows] + [names["2"]]
    for k in (1, 5, 10, 50):
        assert result["metrics"][f"R@{k}"] == pytest.approx(ref_recall(ranked, targets, k))
    assert result["counts"]["gallery"] == 9 and set(result["by_category"]["category"]) == {"FineGym", "Diving"}


def uniform_files(folder: Path, count: int) -> list[Path]:
    """A frame folder's frames at the middles of `count` equal integer segments (covr's "uniform", CoVR's rule)."""
    files = sorted(folder.glob("*.jpg"))
    n, s = len(files), min(count, len(files))
    bounds = [(i * n) // s for i in range(s + 1)]
    return sorted(([files[(bounds[i] + bounds[i + 1] - 1) // 2] for i in range(s)] * count)[:count])


def test_frame_order_reaches_the_query_but_not_the_gallery_pooling(tmp_path):
    """A clip and its time reversal (same frames, same middle frame): X-Aligner's query tells them
    apart once its branches are open; the gallery's frame mean cannot; frames stay in time order."""
    rng = np.random.default_rng(5)
    pixels = np.broadcast_to(rng.integers(20, 236, size=(3, 1, 1, 3)), (3, 32, 32, 3)).astype(np.uint8)
    write_mp4(pixels, tmp_path / "v/forward.mp4", fps=5)
    write_mp4(pixels[::-1].copy(), tmp_path / "v/backward.mp4", fps=5)
    lines = [{"id": f"q{n}", "reference": ref, "text": "pan to the left", "target": "forward"} for n, ref in enumerate(("forward", "backward"))]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / "g.txt").write_text("forward\nbackward\n")
    cfg = {"reader": "cir_jsonl", "annotation": str(tmp_path / "a.jsonl"), "media_root": str(tmp_path / "v"), "image_extension": ".mp4",
           "gallery_file": str(tmp_path / "g.txt"), "exclude_reference": False, "query_frames": 3, "target_frames": 3}  # fmt: skip
    torch.manual_seed(0)
    closed = build_retriever(tiny_model_config()).eval()  # gates at 0: the untrained X-Aligner = the CoVR-2 query
    opened = open_xaligner(build_retriever(tiny_model_config())).eval()
    with torch.no_grad():  # frame embeddings start at N(0, 0.02^2); give them a trained model's weight
        opened.xaligner.frame_embedding.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
    dumps = {}
    for label, retriever in (("closed", closed), ("open", opened)):
        evaluate_benchmark(retriever, cfg, tmp_path / label, batch_size=2, num_workers=0, save_embeddings=True)
        dumps[label] = np.load(tmp_path / label / "cir_jsonl/test/embeddings.npz")
    q = dumps["open"]["query_tokens"]
    assert not np.allclose(q[0], q[1], atol=1e-4)  # order seen
    assert np.allclose(dumps["closed"]["query_tokens"][0], dumps["closed"]["query_tokens"][1], atol=1e-6)  # the middle frame only
    g = dumps["open"]["gallery_tokens"]  # [G, F, Q, E] per frame, in time order
    assert np.allclose(g[1], g[0][::-1], atol=1e-6) and np.allclose(g[0].mean(0), g[1].mean(0), atol=1e-6)


def test_every_benchmark_config_reaches_its_reader():
    """Each conf/benchmark/*.yaml composes (paths resolved) and names only options its reader or
    the evaluator takes, with the official relative layout as its default."""
    import inspect

    from hydra import compose, initialize_config_dir

    names = sorted(p.stem for p in (REPO / "conf/benchmark").glob("*.yaml"))
    assert {"egocvr", "egocvr_local", "tf_covr", "dense_webvid_covr", "covr_jsonl"} <= set(names)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("test", overrides=[f"benchmark=[{','.join(names)}]", "checkpoint=x", "paths.data_dir=/data"])
    for name in names:
        options = OmegaConf.to_container(cfg.benchmark[name], resolve=False)
        reader = READERS[options["reader"]]
        unknown = set(options) - set(inspect.signature(reader).parameters) - set(EVALUATOR_KEYS)
        assert not unknown, (name, unknown)
    assert cfg.benchmark.egocvr.root == "/data/EgoCVR" and cfg.benchmark.tf_covr.root == "/data/TF-CoVR"
    assert cfg.benchmark.dense_webvid_covr.annotation == "/data/Dense-WebVid-CoVR/annotations/dense-webvid8m-covr_test.csv"
    assert cfg.benchmark.egocvr_local.setting == "local"
