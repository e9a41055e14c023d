"""Training validation scores targets as the WebVid-CoVR test protocol (covr2) does: for the same rows
and the same embedding store, the module's validation targets equal the evaluator's gallery columns
(score-weighted frames, every token re-normalised, token mean), so val R@1 predicts test R@1."""

from __future__ import annotations

import torch

from conftest import tiny_model_config
from covr.data.collate import collate_covr
from covr.data.embedding_store import EmbeddingStore
from covr.data.extract import extract_embeddings, videos_from_csv
from covr.data.toy import generate_toy_dataset
from covr.data.webvid_covr import WebVidCoVRDataset
from covr.eval.datasets import load_benchmark
from covr.eval.encoding import gallery_from_store
from covr.eval.protocols import resolve_protocol
from covr.eval.scoring import build_columns
from covr.training.module import CoVRModule


def test_validation_targets_equal_the_covr2_test_columns(tmp_path):
    paths = generate_toy_dataset(tmp_path / "toy", num_train=16, num_val=8, num_test=4, num_frames=4, image_size=32, score_frames=4)
    module = CoVRModule(tiny_model_config(), {}, {"lr": 1e-4}).eval()
    store_path = tmp_path / "store"
    extract_embeddings(module.model, videos_from_csv(paths["val"], paths["video_root"]), store_path, num_frames=4, dtype="float32",
                       num_workers=0, progress=False)  # fmt: skip
    dataset = WebVidCoVRDataset(paths["val"], paths["video_root"], split="val", image_size=32, target_source="store",
                                store=store_path, num_target_frames=4)  # fmt: skip
    batch = collate_covr([dataset[i] for i in range(len(dataset))])
    assert not torch.allclose(batch["target_weights"], torch.full_like(batch["target_weights"], 0.25))  # softmax weights in play
    with torch.no_grad():
        validation = module._val_target(module._target(batch))  # [N, E]

    benchmark = load_benchmark("webvid_covr", {"annotation": paths["val"], "video_root": paths["video_root"], "split": "val"})
    (task,) = benchmark.tasks
    protocol = resolve_protocol("webvid_covr")
    gallery = gallery_from_store(EmbeddingStore.open(store_path), task.gallery.ids, "frames", False)
    columns = build_columns(protocol, task.queries, gallery)
    rows = batch["index"].tolist()
    assert columns.ids == [str(r) for r in rows]
    torch.testing.assert_close(validation, columns.embeddings, rtol=1e-5, atol=1e-6)
    # and not the plain token mean of encode_target (what validation used before; close here: a random
    # tiny model gives the frames of a toy video nearly the same tokens)
    assert not torch.equal(validation, module._target(batch).mean(1))
