"""Loading weights: LAVIS files (with the ViT in a second file), transformers folders through the
hub code path, key errors that list the keys, truncated files, position-embedding interpolation."""

from __future__ import annotations

import logging

import pytest
import torch

from conftest import TINY_SPEC, TINY_VOCAB, tiny_model_config
from covr.models import build_backbone, build_retriever
from covr.models.checkpoint_io import CheckpointError
from covr.tools.verify_fixture import blip2_base_spec


@pytest.fixture(scope="module")
def fixture(blip2_fixture_path):
    return torch.load(blip2_fixture_path, map_location="cpu", weights_only=True)


def _backbone_cfg(fixture, weights, **extra):
    return {"family": "blip2", "weights": str(weights), "tokenizer": fixture["vocab"], "spec": blip2_base_spec(fixture["config"]), **extra}


def _outputs(backbone, fixture):
    tokens = backbone.tokenize(fixture["inputs"]["text"], 12, padding="max_length")
    with torch.no_grad():
        vision = backbone.vision_tokens(fixture["inputs"]["image"])
        return backbone.project_query(backbone.joint_hidden(vision, tokens)).mean(1), backbone.image_embeddings(vision)


def test_lavis_pth_and_covr2_ckpt_layouts_load(fixture, tmp_path):
    """LAVIS .pth ({"model": ...}) and a CoVR-2-style .ckpt (same names under "model" + extra keys)."""
    ref = fixture["outputs"]
    torch.save({"model": fixture["state_dict"], "optimizer": {}, "epoch": 3}, tmp_path / "blip2_finetune_coco.pth")
    torch.save({"model": {"module." + k: v for k, v in fixture["state_dict"].items()}, "config": {"lr": 2e-5}}, tmp_path / "webvid-covr.ckpt")
    for name in ("blip2_finetune_coco.pth", "webvid-covr.ckpt"):
        backbone = build_backbone(_backbone_cfg(fixture, tmp_path / name)).eval()
        query, image = _outputs(backbone, fixture)
        torch.testing.assert_close(query, ref["composed_query"], atol=1e-5, rtol=0)
        torch.testing.assert_close(image, ref["image_embeds_proj"], atol=1e-5, rtol=0)


def test_vision_encoder_from_a_second_file(fixture, tmp_path):
    """blip2_pretrained.pth leaves the ViT out; LAVIS reads it from eva_vit_g.pth (no prefix)."""
    state = fixture["state_dict"]
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("visual_encoder.")}}, tmp_path / "blip2_pretrained.pth")
    torch.save({k[len("visual_encoder."):]: v for k, v in state.items() if k.startswith("visual_encoder.")}, tmp_path / "eva_vit_g.pth")
    with pytest.raises(CheckpointError, match="no vision encoder weights.*vision_weights"):
        build_backbone(_backbone_cfg(fixture, tmp_path / "blip2_pretrained.pth"))
    backbone = build_backbone(_backbone_cfg(fixture, tmp_path / "blip2_pretrained.pth", vision_weights=str(tmp_path / "eva_vit_g.pth"))).eval()
    query, _ = _outputs(backbone, fixture)
    torch.testing.assert_close(query, fixture["outputs"]["composed_query"], atol=1e-5, rtol=0)


def test_unexpected_and_missing_keys_are_listed(fixture, tmp_path, caplog):
    state = dict(fixture["state_dict"])
    state.pop("text_proj.bias")
    state["Qformer.bert.encoder.layer.0.attention.self.query.bias"] = state["Qformer.bert.encoder.layer.0.attention.self.query.bias"]
    state["some_adapter.weight"] = torch.zeros(3)
    torch.save({"model": state}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError) as err:
        build_backbone(_backbone_cfg(fixture, tmp_path / "odd.pth"))
    assert "some_adapter.weight" in str(err.value) and str(tmp_path / "odd.pth") in str(err.value)
    state.pop("some_adapter.weight")
    torch.save({"model": state}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing 1: text_projection\.bias"):
        build_backbone(_backbone_cfg(fixture, tmp_path / "missing.pth"))
    with caplog.at_level(logging.WARNING):
        build_backbone(_backbone_cfg(fixture, tmp_path / "missing.pth", strict=False))
    assert "text_projection.bias" in caplog.text


def test_truncated_and_empty_files_fail_clearly(fixture, tmp_path):
    torch.save({"model": fixture["state_dict"]}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        build_backbone(_backbone_cfg(fixture, tmp_path / "cut.pth"))
    with pytest.raises(CheckpointError, match="empty"):
        build_backbone(_backbone_cfg(fixture, tmp_path / "empty.pth"))
    with pytest.raises(CheckpointError, match="does not exist"):
        build_backbone(_backbone_cfg(fixture, tmp_path / "nope.pth"))


def test_position_embeddings_are_interpolated_to_the_requested_size(fixture, tmp_path, caplog):
    torch.save({"model": fixture["state_dict"]}, tmp_path / "w.pth")
    with caplog.at_level(logging.INFO):
        backbone = build_backbone(_backbone_cfg(fixture, tmp_path / "w.pth", image_size=48)).eval()
    assert "interpolating vision position embeddings from 4x4 to 6x6" in caplog.text
    assert backbone.image_size == 48
    with torch.no_grad():
        assert backbone.vision_tokens(torch.randn(2, 3, 48, 48)).shape == (2, 37, 32)
    with pytest.raises(ValueError, match="frames are 32x32 but this blip2 model expects 48x48"):
        backbone.vision_tokens(torch.randn(2, 3, 32, 32))
    # CLS position is kept and a same-size "interpolation" changes nothing
    pos = backbone.vision_model.embeddings.position_embedding
    torch.testing.assert_close(pos[:, 0], fixture["state_dict"]["visual_encoder.pos_embed"][:, 0])
    same = build_backbone(_backbone_cfg(fixture, tmp_path / "w.pth", image_size=32))
    torch.testing.assert_close(same.vision_model.embeddings.position_embedding, fixture["state_dict"]["visual_encoder.pos_embed"])


def test_transformers_folder_loads_through_the_hub_code_path(tmp_path):
    """save_pretrained folder -> `weights: <folder>` (what a hub id uses, offline) -> identical outputs."""
    model = build_retriever(tiny_model_config(query_head="joint", stage=2)).eval()
    hf = model.backbone.to_transformers()
    hf.save_pretrained(tmp_path / "blip2-tiny")
    model.backbone.tokenizer.save_pretrained(tmp_path / "blip2-tiny")
    cfg = tiny_model_config(query_head="joint", stage=2)
    cfg["backbone"] = {"family": "blip2", "weights": str(tmp_path / "blip2-tiny")}
    loaded = build_retriever(cfg).eval()
    frames = torch.randn(3, 2, 3, 32, 32)
    edits = ["make it red", "move it up", "a green square"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_query(frames, edits), model.encode_query(frames, edits), atol=0, rtol=0)
        torch.testing.assert_close(loaded.encode_target(frames), model.encode_target(frames), atol=0, rtol=0)
        torch.testing.assert_close(loaded.encode_text(edits), model.encode_text(edits), atol=0, rtol=0)
    assert loaded.backbone.tokenizer.get_vocab() == model.backbone.tokenizer.get_vocab()
    assert loaded.target_identity == model.target_identity


def test_unknown_hub_id_fails_offline():
    with pytest.raises(CheckpointError, match="as a hub id it could not be read"):
        build_backbone({"family": "blip2", "weights": "covr-test/no-such-model", "tokenizer": TINY_VOCAB, "spec": TINY_SPEC})


def _covr_checkpoint(model, cfg, path):
    from covr.models import checkpoint_payload

    torch.save({"covr": checkpoint_payload(model, cfg), "state_dict": {"model." + k: v for k, v in model.state_dict().items()}}, path)


def test_covr_checkpoint_rebuilds_offline_and_stage2_starts_from_stage1(tmp_path):
    from covr.models import load_retriever

    cfg = tiny_model_config(stage=1)
    stage1 = build_retriever(cfg)
    with torch.no_grad():
        for p in stage1.xaligner.parameters():
            p.add_(0.01 * torch.randn_like(p))
    stage1.eval()
    _covr_checkpoint(stage1, cfg, tmp_path / "stage1.ckpt")
    frames, edits, caps = torch.randn(2, 3, 3, 32, 32), ["make it red", "move it up"], ["a circle", ""]
    reloaded = load_retriever(tmp_path / "stage1.ckpt").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.encode_query(frames, edits, caps), stage1.encode_query(frames, edits, caps), atol=0, rtol=0)
    stage2 = build_retriever(tiny_model_config(stage=2, init_from=str(tmp_path / "stage1.ckpt"))).eval()
    assert stage2.backbone.target_path is not None
    with torch.no_grad():
        torch.testing.assert_close(stage2.encode_query(frames, edits, caps), stage1.encode_query(frames, edits, caps), atol=1e-6, rtol=0)
    assert stage2.target_identity == stage1.target_identity
    # a stage-2 checkpoint carries its frozen target copy and reloads with it
    with torch.no_grad():
        stage2.backbone.qformer.layernorm.weight.add_(0.1)
    _covr_checkpoint(stage2, tiny_model_config(stage=2), tmp_path / "stage2.ckpt")
    again = load_retriever(tmp_path / "stage2.ckpt").eval()
    assert again.target_identity == stage1.target_identity
    with torch.no_grad():
        torch.testing.assert_close(again.encode_query(frames, edits, caps), stage2.encode_query(frames, edits, caps), atol=0, rtol=0)
    with pytest.raises(CheckpointError, match="not a covr checkpoint"):
        torch.save({"model": {}}, tmp_path / "lavis.pth")
        load_retriever(tmp_path / "lavis.pth")
