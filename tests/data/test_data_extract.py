from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_data import make_video, triplet, write_csv

from covr.data.embedding_store import EmbeddingStore
from covr.data.extract import extract_embeddings, shard_from_env, videos_from_csv, videos_from_folder

REPO = Path(__file__).resolve().parents[2]


class MeanColourEncoder(torch.nn.Module):
    """Stand-in retriever target path: per frame, Q=2 tokens = normalised (mean colour, 1 - mean colour)."""

    image_size = 16
    identity = "mean-colour-v1"

    def encode_target_frames(self, frames, frame_mask=None):  # [B, F, 3, H, W] -> [B, F, 2, 3]
        mean = frames.mean(dim=(-2, -1))
        tokens = torch.stack([mean, 1 - mean], dim=2)
        return torch.nn.functional.normalize(tokens, dim=-1)


@pytest.fixture
def videos(tmp_path):
    root = tmp_path / "videos"
    for i in range(5):
        make_video(root / "p" / f"v{i}.mp4", num_frames=6 + i, seed=i)
    (root / "p" / "bad.mp4").write_text("not a video")
    return root


def test_sources_from_csv_and_folder(tmp_path, videos):
    csv_path = write_csv(tmp_path / "x.csv", [triplet("p/v0", "p/v2"), triplet("p/v1", "p/v2"), triplet("p/v2", "p/v3")])
    assert [i for i, _ in videos_from_csv(csv_path, videos)] == ["p/v2", "p/v3"]
    both = videos_from_csv(csv_path, videos, include_references=True)
    assert [i for i, _ in both] == ["p/v2", "p/v3", "p/v0", "p/v1"] and both[0][1] == videos / "p" / "v2.mp4"
    assert [i for i, _ in videos_from_folder(videos)] == ["p/bad", "p/v0", "p/v1", "p/v2", "p/v3", "p/v4"]


def test_extract_writes_a_readable_store_and_resumes(tmp_path, videos):
    listing = videos_from_folder(videos)
    result = extract_embeddings(MeanColourEncoder(), listing, tmp_path / "s", num_frames=4, num_workers=0, batch_size=2, progress=False)
    assert result.written == 5 and [i for i, _ in result.failed] == ["p/bad"]
    assert "p/bad" in (tmp_path / "s" / "failed-shard-0.txt").read_text()
    store = EmbeddingStore.open(tmp_path / "s", expected_identity="mean-colour-v1")
    array, n = store.get("p/v1")
    assert n == 4 and array.shape == (4, 2, 3) and store.missing_ids() == ["p/bad"]
    np.testing.assert_allclose(np.linalg.norm(array.astype(np.float32), axis=-1), 1.0, atol=2e-3)
    (videos / "p" / "bad.mp4").unlink()  # "repair" it: a rerun only does what is left
    make_video(videos / "p" / "bad.mp4", seed=9)
    again = extract_embeddings(MeanColourEncoder(), listing, tmp_path / "s", num_frames=4, num_workers=0, progress=False)
    assert (again.written, again.already_done, again.failed) == (1, 5, [])
    np.testing.assert_array_equal(EmbeddingStore.open(tmp_path / "s").get("p/v1")[0], array)


def test_sharded_mean_token_extraction_equals_single(tmp_path, videos):
    listing = [v for v in videos_from_folder(videos) if v[0] != "p/bad"]
    kw = dict(num_frames=3, mean_tokens=True, dtype="float32", progress=False)
    extract_embeddings(MeanColourEncoder(), listing, tmp_path / "one", num_workers=1, **kw)
    for shard_id in range(2):
        extract_embeddings(MeanColourEncoder(), listing, tmp_path / "two", num_shards=2, shard_id=shard_id, num_workers=0, **kw)
    one, two = EmbeddingStore.open(tmp_path / "one"), EmbeddingStore.open(tmp_path / "two")
    assert one.frame_shape == (3,) and two.num_shards == 2
    for video_id, _ in listing:
        np.testing.assert_allclose(one.get(video_id)[0], two.get(video_id)[0], atol=1e-6)


def test_shard_from_env():
    assert shard_from_env({}) == (1, 0)
    assert shard_from_env({"WORLD_SIZE": "4", "RANK": "3"}) == (4, 3)
    assert shard_from_env({"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "WORLD_SIZE": "4", "RANK": "3"}) == (8, 5)


def test_cli_with_a_tiny_retriever_checkpoint(tmp_path, videos, monkeypatch):
    """covr-extract-embeddings end to end: real (tiny) retriever from a covr checkpoint, folder source."""
    from conftest import tiny_model_config  # tests/conftest.py
    from covr.tools.extract_embeddings import main

    from covr.models import build_retriever, checkpoint_payload

    cfg = tiny_model_config()
    model = build_retriever(cfg)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"covr": checkpoint_payload(model, cfg), "state_dict": state}, tmp_path / "tiny.ckpt")
    (videos / "p" / "bad.mp4").unlink()
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    code = main(["--folder", str(videos), "--checkpoint", str(tmp_path / "tiny.ckpt"), "--out", str(tmp_path / "s"),
                 "--num-frames", "3", "--num-workers", "0", "--device", "cpu"])  # fmt: skip
    assert code == 0
    store = EmbeddingStore.open(tmp_path / "s", expected_identity=model.target_identity)
    frames = torch.stack([torch.from_numpy(store.get(f"p/v{i}")[0].astype(np.float32)) for i in range(5)])
    assert frames.shape[1:] == (3, 4, 16)  # [F, Q, E] of the tiny config
    from covr.data.transforms import TestTransform
    from covr.data.video import load_frames

    direct = model.encode_target_frames(TestTransform(model.image_size)(load_frames(videos / "p" / "v0.mp4", 3, "uniform"))[None])
    torch.testing.assert_close(frames[0], direct[0], atol=2e-3, rtol=0)  # fp16 storage
