"""One loader for every format: LAVIS / CoVR / CoVR-2 files reproduce the reference outputs, every
format round-trips on tiny models (and through a converted covr folder), positions are
interpolated with a note, unmatched keys are listed."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

import covr
from conftest import TINY_BLIP_SPEC, TINY_SPEC, TINY_VOCAB, tiny_model_config
from covr.models import build_retriever, checkpoint_payload
from covr.models.checkpoint_io import CheckpointError
from covr.models.loading import load_model
from covr.tools.convert_checkpoint import main as convert_main
from covr.tools.verify_fixture import blip2_base_spec, blip_base_spec

EDITS = ["make it red", "move it to the left", "change the background to white"]
CAPTIONS = ["a blue circle", "", "a square on a black background"]
SPECS = {"blip2": TINY_SPEC, "blip": TINY_BLIP_SPEC}
FIXTURES = {"blip2": ("blip2_fixture_path", blip2_base_spec, "image_embeds_proj"), "blip": ("blip_fixture_path", blip_base_spec, "image_feat")}


def _fixture(request, family):
    name, base_spec, target_key = FIXTURES[family]
    fixture = torch.load(request.getfixturevalue(name), map_location="cpu", weights_only=True)
    return fixture, base_spec(fixture["config"]), target_key


def _load_fixture_format(path, fixture, spec, **options):
    config = {"query_head": "joint", "max_text_length": fixture["config"]["max_txt_len"]}
    return load_model(path, tokenizer=fixture["vocab"], spec=spec, config=config, **options)


def _check_against_fixture(model, fixture, target_key):
    inputs, ref = fixture["inputs"], fixture["outputs"]
    with torch.no_grad():
        query = model.encode_query(inputs["image"], inputs["text"]).mean(1)
        target = model.encode_target(inputs["image"])
    torch.testing.assert_close(query, ref["composed_query"], atol=1e-5, rtol=0)
    torch.testing.assert_close(target.squeeze(1) if target_key == "image_feat" else target, ref[target_key], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["blip2", "blip"])
def test_lavis_and_covr_layouts_reproduce_the_reference(request, tmp_path, family):
    """LAVIS .pth {"model"}, CoVR / CoVR-2 .ckpt ("model" with DDP prefix, or Lightning "state_dict"
    with "model." prefix), a bare state dict; then the converted folder gives the same outputs."""
    fixture, spec, target_key = _fixture(request, family)
    sd = fixture["state_dict"]
    layouts = {
        "lavis.pth": {"model": sd, "optimizer": {}, "epoch": 3},
        "covr_model.ckpt": {"model": {"module." + k: v for k, v in sd.items()}, "config": {"lr": 1e-5}},
        "covr_lightning.ckpt": {"state_dict": {"model." + k: v for k, v in sd.items()}, "epoch": 4},
        "bare.pt": dict(sd),
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        model = _load_fixture_format(tmp_path / name, fixture, spec)
        assert model.backbone.family == family and model.query_head == "joint", name
        _check_against_fixture(model, fixture, target_key)
    assert convert_main([str(tmp_path / "lavis.pth"), str(tmp_path / "folder"), "--tokenizer", str(_vocab_file(tmp_path, fixture)), "--spec", str(_spec_file(tmp_path, spec))]) == 0
    folder = load_model(tmp_path / "folder")
    folder.max_text_length = fixture["config"]["max_txt_len"]
    _check_against_fixture(folder, fixture, target_key)
    card = (tmp_path / "folder" / "README.md").read_text()
    assert "lavis.pth" in card and "sha256" in card and covr.__version__ in card
    if family == "blip":
        assert "91 momentum-encoder (*_m) keys" in card and "queue" in card


def _vocab_file(tmp_path, fixture):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(fixture["vocab"]) + "\n")
    return path


def _spec_file(tmp_path, spec):
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"family": "any", "spec": spec}))
    return path


def test_covr_checkpoint_without_itm_head_loads_with_a_note(blip_fixture_path, tmp_path, caplog):
    fixture = torch.load(blip_fixture_path, map_location="cpu", weights_only=True)
    torch.save({"model": {k: v for k, v in fixture["state_dict"].items() if not k.startswith("itm_head")}}, tmp_path / "covr.ckpt")
    with caplog.at_level(logging.INFO, logger="covr"):
        model = _load_fixture_format(tmp_path / "covr.ckpt", fixture, blip_base_spec(fixture["config"]))
    assert "has no itm_head.*: left at initialisation" in caplog.text
    _check_against_fixture(model, fixture, "image_feat")
    # the backbone was built without random init (every other weight is loaded): the head the
    # file lacks still gets transformers' init, never uninitialised memory
    head = model.backbone.itm_head
    assert torch.isfinite(head.weight).all() and torch.equal(head.bias, torch.zeros_like(head.bias))
    assert 0.5 * 0.02 < head.weight.std().item() < 1.5 * 0.02


def test_blip_position_embeddings_are_interpolated_with_a_note(blip_fixture_path, tmp_path, caplog):
    fixture = torch.load(blip_fixture_path, map_location="cpu", weights_only=True)
    torch.save({"model": fixture["state_dict"]}, tmp_path / "blip.pth")
    with caplog.at_level(logging.INFO, logger="covr"):
        model = _load_fixture_format(tmp_path / "blip.pth", fixture, blip_base_spec(fixture["config"]), image_size=48)
    assert "interpolating vision position embeddings from 4x4 to 6x6" in caplog.text and model.image_size == 48
    with torch.no_grad():
        assert model.encode_target(torch.randn(2, 3, 48, 48)).shape == (2, 1, 16)
    torch.testing.assert_close(model.backbone.vision_model.embeddings.position_embedding[:, 0], fixture["state_dict"]["visual_encoder.pos_embed"][:, 0])


def _tiny(family, **overrides):
    model = build_retriever(tiny_model_config(family, **overrides))
    with torch.no_grad():  # leave the X-Aligner's exact-baseline start, so its weights matter
        for p in (model.xaligner.parameters() if model.xaligner is not None else []):
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _outputs(model):
    g = torch.Generator().manual_seed(3)
    frames = torch.randn(3, 2, 3, 32, 32, generator=g)
    with torch.no_grad():
        return model.encode_query(frames, EDITS, CAPTIONS), model.encode_target(frames), model.encode_text(EDITS)


def _assert_same(a, b):
    """Equal up to float kernel choice (weights read from safetensors may sit at other alignments)."""
    for x, y in zip(_outputs(a), _outputs(b)):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["blip2", "blip"])
def test_transformers_formats_round_trip(tmp_path, caplog, family):
    """save_pretrained folder (what a hub id loads), and its state dict as .pt and .safetensors."""
    model = _tiny(family, query_head="joint", stage=2)
    hf = model.backbone.to_transformers()
    hf.save_pretrained(tmp_path / "hf")
    model.backbone.tokenizer.save_pretrained(tmp_path / "hf")
    _assert_same(load_model(tmp_path / "hf", config={"query_head": "joint", "max_text_length": 16}), model)
    with caplog.at_level(logging.INFO, logger="covr"):
        resized = load_model(tmp_path / "hf", image_size=48)
    assert resized.image_size == 48 and "interpolating vision position embeddings from 4x4 to 6x6" in caplog.text
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    torch.save(state, tmp_path / "weights.pt")
    save_file(state, str(tmp_path / "model.safetensors"))
    for name in ("weights.pt", "model.safetensors"):
        loaded = load_model(tmp_path / name, tokenizer=TINY_VOCAB, spec=SPECS[family], config={"query_head": "joint", "max_text_length": 16})
        _assert_same(loaded, model)


@pytest.mark.parametrize("family", ["blip2", "blip"])
def test_covr_checkpoint_folder_and_state_dict_round_trip(tmp_path, family):
    cfg = tiny_model_config(family, stage=2)
    model = _tiny(family, stage=2)
    torch.save({"covr": checkpoint_payload(model, cfg), "state_dict": {"model." + k: v for k, v in model.state_dict().items()}}, tmp_path / "run.ckpt")
    _assert_same(load_model(tmp_path / "run.ckpt"), model)
    assert convert_main([str(tmp_path / "run.ckpt"), str(tmp_path / "folder")]) == 0
    folder = load_model(tmp_path / "folder")
    _assert_same(folder, model)
    assert folder.target_identity == model.target_identity and folder.query_head == "xaligner"
    torch.save(model.state_dict(), tmp_path / "retriever.pt")
    _assert_same(load_model(tmp_path / "retriever.pt", config=cfg), model)
    backbone_only = build_retriever({**tiny_model_config(family, query_head="joint", stage=2), "backbone": {"family": family, "weights": str(tmp_path / "folder")}})
    torch.testing.assert_close(_outputs(backbone_only)[1], _outputs(model)[1], atol=1e-6, rtol=0)  # `weights:` takes any format


def test_unmatched_keys_are_listed(blip_fixture_path, tmp_path, caplog):
    fixture = torch.load(blip_fixture_path, map_location="cpu", weights_only=True)
    state = dict(fixture["state_dict"])
    state.pop("text_proj.bias")
    torch.save({"model": {**state, "some_adapter.weight": torch.zeros(3)}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"1 keys have no BLIP counterpart: some_adapter\.weight"):
        _load_fixture_format(tmp_path / "odd.pth", fixture, blip_base_spec(fixture["config"]))
    torch.save({"model": state}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing 1: text_proj\.bias"):
        _load_fixture_format(tmp_path / "missing.pth", fixture, blip_base_spec(fixture["config"]))
    with caplog.at_level(logging.WARNING):
        _load_fixture_format(tmp_path / "odd.pth", fixture, blip_base_spec(fixture["config"]), strict=False)
    assert "some_adapter.weight" in caplog.text and "text_proj.bias" in caplog.text


# ---- bad input: one line, saying what was expected --------------------------------------------


def _one_line_error(fn, *pieces):
    with pytest.raises(CheckpointError) as err:
        fn()
    message = str(err.value)
    assert "\n" not in message, message
    for piece in pieces:
        assert piece in message, message
    return message


def test_unknown_formats_fail_in_one_line(tmp_path):
    torch.save({"weights": {"encoder.w": torch.zeros(2)}, "step": 3}, tmp_path / "other.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    (tmp_path / "notes.ckpt").write_text("not a checkpoint at all\n" * 20)
    (tmp_path / "empty_dir").mkdir()
    expected = "expected a covr model folder or checkpoint, a transformers BLIP / BLIP-2 folder or hub id, a LAVIS BLIP"
    _one_line_error(lambda: load_model(tmp_path / "other.pth"), "unknown checkpoint format (top-level keys: step, weights)", expected)
    _one_line_error(lambda: load_model(tmp_path / "list.pt"), "holds a list, not a dict", expected)
    _one_line_error(lambda: load_model(tmp_path / "notes.ckpt"), "not a readable torch file", expected)
    _one_line_error(lambda: load_model(tmp_path / "empty_dir"), "has no config.json; expected a covr model folder")
    _one_line_error(lambda: load_model(tmp_path / "nope.pth"), "does not exist", expected)
    _one_line_error(lambda: load_model("covr-test/no-such-model"), "as a hub id it could not be read", expected)


def test_truncated_files_fail_in_one_line(blip_fixture_path, tmp_path):
    fixture = torch.load(blip_fixture_path, map_location="cpu", weights_only=True)
    torch.save({"model": fixture["state_dict"]}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    save_file({k: v.contiguous() for k, v in fixture["state_dict"].items()}, str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 1000])
    _one_line_error(lambda: load_model(tmp_path / "cut.pth"), "truncated or corrupt", "expected a covr model folder")
    _one_line_error(lambda: load_model(tmp_path / "cut.safetensors"), "truncated or corrupt")


def test_weights_of_the_other_family_fail_in_one_line(blip_fixture_path, blip2_fixture_path, tmp_path):
    blip = torch.load(blip_fixture_path, map_location="cpu", weights_only=True)
    blip2 = torch.load(blip2_fixture_path, map_location="cpu", weights_only=True)
    torch.save({"model": blip["state_dict"]}, tmp_path / "blip.pth")
    torch.save({"model": blip2["state_dict"]}, tmp_path / "blip2.pth")
    _one_line_error(
        lambda: load_model(tmp_path / "blip.pth", family="blip2"),
        "is a LAVIS BLIP state dict, but the backbone config asks for family 'blip2'; expected BLIP-2 weights",
    )
    cfg = tiny_model_config("blip")
    cfg["backbone"].update(weights=str(tmp_path / "blip2.pth"))
    _one_line_error(lambda: build_retriever(cfg), "is a LAVIS BLIP-2 state dict", "family 'blip'; expected BLIP weights", "model=blip2")
    model = _tiny("blip", query_head="joint", stage=2)
    model.backbone.to_transformers().save_pretrained(tmp_path / "hf-blip")
    model.backbone.tokenizer.save_pretrained(tmp_path / "hf-blip")
    cfg = tiny_model_config("blip2")
    cfg["backbone"].update(weights=str(tmp_path / "hf-blip"))
    _one_line_error(lambda: build_retriever(cfg), "is a transformers model (BLIP)", "expected BLIP-2 weights")


def test_a_retriever_state_dict_needs_its_config(tmp_path):
    torch.save(_tiny("blip").state_dict(), tmp_path / "retriever.pt")
    _one_line_error(lambda: load_model(tmp_path / "retriever.pt"), "covr retriever state dict without its config; expected config=")


def test_conversion_tool_reports_errors_in_one_line(tmp_path, capsys):
    torch.save({"weights": {}}, tmp_path / "other.pth")
    assert convert_main([str(tmp_path / "other.pth"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "unknown checkpoint format" in err and "\n" not in err
