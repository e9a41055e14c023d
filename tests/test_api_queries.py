"""covr.load encodes queries as evaluation does: texts cleaned by the training function (switchable),
and as many reference frames as the checkpoint was trained with, recorded by the training module."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import covr
from conftest import open_xaligner, tiny_model_config
from covr.data.toy_render import write_mp4
from covr.models import build_retriever
from covr.models.build import retriever_from_checkpoint
from covr.models.folder import save_model_folder
from covr.training.module import CoVRModule


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "clip.mp4"
    frames = np.zeros((8, 32, 32, 3), dtype=np.uint8)
    for t in range(8):
        frames[t, :, 4 * t : 4 * t + 4] = (30 * t, 200, 255 - 30 * t)  # every frame differs
    write_mp4(frames, path)
    return path


def test_checkpoints_record_the_query_frames_of_training():
    module = CoVRModule(tiny_model_config(), {}, {"lr": 1e-4})
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(cfg={"num_reference_frames": 3, "reference_sampling": "uniform"}))
    checkpoint = {"state_dict": {"model." + k: v for k, v in module.model.state_dict().items()}}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["covr"]["model_config"]["query_frames"] == {"num_frames": 3, "strategy": "uniform"}
    assert retriever_from_checkpoint(checkpoint, "mem.ckpt").query_frames == {"num_frames": 3, "strategy": "uniform"}


def test_load_follows_the_trained_frames_and_cleans_texts(tmp_path, video):
    model = open_xaligner(build_retriever(tiny_model_config()).eval())  # open gates: every frame moves the query
    model.query_frames = {"num_frames": 3, "strategy": "uniform"}
    save_model_folder(model, tmp_path / "model")
    retriever = covr.load(tmp_path / "model", device="cpu")
    assert retriever.model.query_frames == {"num_frames": 3, "strategy": "uniform"}  # kept by the model folder
    default = retriever.encode_query(video, "make it red")
    assert torch.equal(default, retriever.encode_query(video, "make it red", num_frames=3))
    assert not torch.equal(default, retriever.encode_query(video, "make it red", num_frames=1))

    messy = "MAKE it (red)!  The CIRCLE; now."
    assert torch.equal(retriever.encode_query(video, messy), retriever.encode_query(video, "make it red the circle now"))
    raw = covr.load(tmp_path / "model", device="cpu", clean_text=False)
    assert not torch.equal(raw.encode_query(video, messy), retriever.encode_query(video, messy))
