"""CoVR-2's caption term from a text store: the extraction writes the model's own caption features,
keyed by the cleaned caption and stamped with the text encoder's identity; the dataset serves them,
the training module uses them instead of encoding captions, and a run checks the store up front."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_data import make_video, triplet, write_csv

from conftest import tiny_model_config
from covr.data.embedding_store import EmbeddingStore
from covr.data.errors import EmbeddingStoreError
from covr.data.extract import captions_from_csv, extract_caption_embeddings
from covr.data.webvid_covr import WebVidCoVRDataset
from covr.models import build_retriever
from covr.training.prepare import prepare_caption_store


@pytest.fixture(scope="module")
def model():
    return build_retriever(tiny_model_config(stage=2)).eval()


def _csv(tmp_path):
    rows = [triplet(f"page/v{i}", f"page/v{i + 1}") for i in range(3)] + [triplet("page/v0", "page/v2")]  # v2's caption twice
    return write_csv(tmp_path / "train.csv", rows)


def test_extraction_writes_the_model_caption_features(tmp_path, model):
    texts = captions_from_csv(_csv(tmp_path))
    assert texts == ["caption of page/v1", "caption of page/v2", "caption of page/v3"]  # cleaned, unique, in order
    result = extract_caption_embeddings(model, texts, tmp_path / "captions", dtype="float32", progress=False)
    store = EmbeddingStore.open(tmp_path / "captions", model.text_identity, kind="text")
    assert result.written == 3 and store.frame_shape == (16,) and store.kind == "text"
    with torch.no_grad():
        expected = model.encode_text(texts).numpy()
    for text, row in zip(texts, expected):
        assert np.allclose(store.get(text)[0][0], row, atol=1e-6)
    with pytest.raises(EmbeddingStoreError, match="was written by model"):
        EmbeddingStore.open(tmp_path / "captions", model.target_identity)
    with pytest.raises(EmbeddingStoreError, match="holds text embeddings, this run needs video embeddings"):
        EmbeddingStore.open(tmp_path / "captions", kind="video")


def test_text_identity_follows_the_text_encoder_only(model):
    other = build_retriever(tiny_model_config(stage=2)).eval()
    assert other.text_identity == model.text_identity
    with torch.no_grad():
        other.backbone.vision_model.embeddings.patch_embedding.weight.add_(1.0)
    assert other.text_identity == model.text_identity and other.target_identity != model.target_identity
    with torch.no_grad():
        next(p for n, p in other.backbone.named_parameters() if n.startswith("qformer.")).add_(1.0)
    assert other.text_identity != model.text_identity


def test_dataset_serves_the_stored_feature_of_each_target_caption(tmp_path, model):
    for i in range(4):
        make_video(tmp_path / "videos" / "page" / f"v{i}.mp4", num_frames=4, seed=i)
    csv_path = _csv(tmp_path)
    extract_caption_embeddings(model, captions_from_csv(csv_path), tmp_path / "captions", progress=False)
    dataset = WebVidCoVRDataset(csv_path, tmp_path / "videos", split="train", image_size=32, num_target_frames=2,
                                caption_store=tmp_path / "captions", caption_store_identity=model.text_identity, epoch_mode="all_triplets")  # fmt: skip
    store = EmbeddingStore.open(tmp_path / "captions")
    for index in range(len(dataset)):
        item = dataset[index]
        assert torch.equal(item["target_caption_embedding"], torch.from_numpy(store.get(item["target_caption"])[0][0]))
    with pytest.raises(EmbeddingStoreError, match="was written by model"):
        WebVidCoVRDataset(csv_path, tmp_path / "videos", caption_store=tmp_path / "captions", caption_store_identity="another")


def test_module_takes_stored_features_instead_of_encoding_captions(model):
    from covr.training.module import CoVRModule

    module = CoVRModule(tiny_model_config(stage=2), {"caption_weight": 0.5}, {"lr": 1e-4})
    features = torch.randn(2, 16)
    assert module._caption({"target_caption_embedding": features.half(), "target_caption": ["a", "b"]}).equal(features.half().float())
    online = module._caption({"target_caption": ["a", "b"]})
    assert online.shape == (2, 16) and online.requires_grad  # online: the model encodes (and trains) them


def test_a_run_checks_or_writes_the_caption_store_before_training(tmp_path, model):
    csv_path = _csv(tmp_path)
    cfg = {"train": {"csv": str(csv_path)}, "caption_features": "store", "caption_store": str(tmp_path / "captions"), "extract_caption_store": True}
    identity = prepare_caption_store(cfg, model, {"caption_weight": 0.5})
    assert identity == model.text_identity and cfg["caption_store"] == str(tmp_path / "captions" / identity)
    assert EmbeddingStore.open(cfg["caption_store"], identity, kind="text").missing_ids() == []
    rows = [triplet("page/v0", "page/v9")]  # a caption the store does not hold
    given = {"train": {"csv": str(write_csv(tmp_path / "more.csv", rows))}, "caption_features": "store", "caption_store": cfg["caption_store"]}
    with pytest.raises(EmbeddingStoreError, match=r"lacks 1 of the 1 train captions \(e.g. 'caption of page/v9'\).*--captions"):
        prepare_caption_store(given, model, {"caption_weight": 0.5})
    online = {"caption_features": "online", "caption_store": "unused"}
    assert prepare_caption_store(online, model, {"caption_weight": 0.5}) is None and online["caption_store"] is None
    assert prepare_caption_store({"caption_features": "store"}, model, {"caption_weight": 0.0}) is None  # no caption term


def test_extraction_tool_writes_the_caption_store(tmp_path, model, monkeypatch):
    """covr-extract-embeddings --captions end to end, from a converted model folder."""
    from covr.models.folder import save_model_folder
    from covr.tools.extract_embeddings import main

    save_model_folder(model, tmp_path / "model")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    code = main(["--csv", str(_csv(tmp_path)), "--captions", "--checkpoint", str(tmp_path / "model"), "--out", str(tmp_path / "text"), "--device", "cpu"])
    assert code == 0
    store = EmbeddingStore.open(tmp_path / "text", model.text_identity, kind="text")
    assert store.ids == ["caption of page/v1", "caption of page/v2", "caption of page/v3"] and not store.missing_ids()
