"""Query heads are named for what they compute (`joint`, `xaligner`); the former name `covr2` of the
joint head still loads from checkpoints, model folders and configs, as `joint`, with a logged note."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from conftest import tiny_model_config
from covr.models import build_retriever, checkpoint_payload, load_model
from covr.models.folder import save_model_folder

EDITS = ["make it red", "turn left"]


def _query(model) -> torch.Tensor:
    frames = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.encode_query(frames, EDITS)


def test_former_name_loads_from_a_checkpoint_a_folder_and_a_config(tmp_path, caplog):
    cfg = tiny_model_config("blip2", query_head="joint", stage=2)
    model = build_retriever(cfg).eval()
    reference = _query(model)
    old_cfg = {**cfg, "query_head": "covr2"}
    weights = {"model." + k: v for k, v in model.state_dict().items()}
    torch.save({"covr": checkpoint_payload(model, old_cfg), "state_dict": weights}, tmp_path / "old.ckpt")
    save_model_folder(model, tmp_path / "folder")
    config_file = tmp_path / "folder" / "config.json"
    config = json.loads(config_file.read_text())
    assert config["query_head"] == "joint"  # what covr writes now
    config["query_head"] = "covr2"
    del config["stage"]  # older folders lack it: the joint head's weights are a stage-2 result
    config_file.write_text(json.dumps(config))
    with caplog.at_level(logging.INFO, logger="covr.models"):
        loaded = [load_model(tmp_path / "old.ckpt"), load_model(tmp_path / "folder"), build_retriever(old_cfg).eval()]
    assert caplog.text.count("query_head 'covr2' is now called 'joint'") == 3
    for other in loaded:
        assert other.query_head == "joint" and other.stage == 2
    for other in loaded[:2]:  # the built one has fresh weights
        torch.testing.assert_close(_query(other), reference, atol=1e-6, rtol=0)


def test_unknown_head_is_one_line_naming_the_choices():
    with pytest.raises(ValueError, match=r"^query_head 'covr3' is not one of joint, xaligner$"):
        build_retriever(tiny_model_config(query_head="covr3"))
