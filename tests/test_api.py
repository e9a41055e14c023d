"""The one-call inference API: the README example runs on toy data, and file-path encoding equals
the model's own tensor interface."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

import covr
from conftest import REPO, tiny_model_config
from covr.data.errors import VideoDecodeError
from covr.data.toy import generate_toy_dataset
from covr.data import transforms  # (not `import test_transform`: pytest would collect it)
from covr.data.video import load_frames
from covr.models import build_retriever, checkpoint_payload
from covr.similarity import similarity
from covr.tools.convert_checkpoint import main as convert_main

MARKER = "<!-- example: covr.load"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    generate_toy_dataset(root / "toy", num_train=16, num_val=3, num_test=6, num_frames=6, image_size=32)
    return root


def _tiny_checkpoint(path, family="blip2"):
    cfg = tiny_model_config(family, max_text_length=24)
    model = build_retriever(cfg).eval()
    torch.save({"covr": checkpoint_payload(model, cfg), "state_dict": {"model." + k: v for k, v in model.state_dict().items()}}, path)
    return model


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    assert MARKER in text, "README.md lost its covr.load example"
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.S)
    return block.group(1)


def test_readme_example_runs_after_the_main_job(toy, tmp_path, monkeypatch, capsys):
    """README: the python block verbatim, in a folder laid out as the main job leaves the repository
    root (toy data in data/toy, one folder per stage under runs/toy/<run_id>/), with two runs: the
    block must take the latest. The model folder the README's conversion writes loads too."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "toy").symlink_to(toy / "toy")
    older, latest = (tmp_path / "runs" / "toy" / run / "stage2" / "checkpoints" for run in ("2026-01-01_09-00-00", "2026-01-02_09-00-00"))
    older.mkdir(parents=True)
    (older / "final.ckpt").write_bytes(b"not the latest run")  # loading it would fail
    latest.mkdir(parents=True)
    _tiny_checkpoint(latest / "final.ckpt")
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_example(), "README.md", "exec"), {"__name__": "__main__"})
    lines = capsys.readouterr().out.strip().splitlines()
    ranked = [line for line in lines if line.endswith(".mp4") and not line.startswith("expected")]
    assert len(ranked) == 5 and lines[-1].startswith("expected: data/toy/videos/")
    assert convert_main([str(latest / "final.ckpt"), "models/toy"]) == 0
    assert covr.load("models/toy", device="cpu").model.identity == covr.load(latest / "final.ckpt", device="cpu").model.identity
    scores = [float(line.split()[0]) for line in ranked]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("family", ["blip2", "blip"])
def test_paths_encode_like_the_tensor_interface(toy, tmp_path, family):
    model = _tiny_checkpoint(tmp_path / "run.ckpt", family)
    api = covr.load(tmp_path / "run.ckpt", device="cpu")
    videos = sorted(str(p) for p in (toy / "toy" / "videos").rglob("*.mp4"))[:5]
    image = tmp_path / "still.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image)
    paths = videos[:3] + [str(image)] + videos[3:]
    gallery = api.encode_gallery(paths, batch_size=2)  # a batch mixes a 15-frame clip with a 1-frame image
    assert gallery.paths == paths and gallery.embeddings.shape[:2] == (6, model.backbone.num_query_tokens)
    with torch.no_grad():
        for i, path in enumerate(paths):
            frames = transforms.TestTransform(model.image_size)(load_frames(path, 15, "uniform"))[None]
            torch.testing.assert_close(gallery.embeddings[i : i + 1], model.encode_target(frames), atol=1e-6, rtol=0)
        query = api.encode_query([videos[0], str(image)], ["make it red", "turn it blue"], caption=["a circle", ""])
        middle = transforms.TestTransform(model.image_size)(load_frames(videos[0], 1, "middle"))[None]
        torch.testing.assert_close(query[:1], model.encode_query(middle, ["make it red"], ["a circle"]), atol=1e-6, rtol=0)
    ranked = api.search(query, gallery, k=10)
    assert len(ranked) == 2 and all(len(r) == 6 for r in ranked)  # k is capped at the gallery size
    scores = similarity(query, gallery.embeddings)
    for row, hits in zip(scores, ranked):
        assert [p for p, _ in hits] == [paths[j] for j in row.argsort(descending=True).tolist()]
    single = api.search(query[:1], gallery, k=2)
    assert [p for p, _ in single] == [p for p, _ in ranked[0][:2]] and isinstance(single[0][1], float)


def test_bad_api_inputs(toy, tmp_path):
    _tiny_checkpoint(tmp_path / "run.ckpt")
    api = covr.load(tmp_path / "run.ckpt")
    video = next(str(p) for p in (toy / "toy" / "videos").rglob("*.mp4"))
    with pytest.raises(ValueError, match="2 texts for 1 references"):
        api.encode_query(video, ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        api.encode_gallery([])
    with pytest.raises(VideoDecodeError, match="no such file"):
        api.encode_gallery([str(tmp_path / "missing.mp4")])
