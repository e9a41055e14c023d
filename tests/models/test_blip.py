"""BLIP (v1) backbone behind the same retriever interface: CoVR's composed query and targets,
X-Aligner starting exactly at it, multi-frame masks, and stage-2 training control."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import CAPTIONS, EDITS, assert_padded_batch_equals_samples_alone, open_xaligner, tiny_model_config
from conftest import query_frames as _frames
from covr.losses import ContrastiveLoss
from covr.models import build_retriever

def _blip(**overrides):
    return build_retriever(tiny_model_config("blip", **overrides))


def _open_gates(model):
    return open_xaligner(model)  # every X-Aligner weight on the path (branches start at exactly zero)


def test_covr_query_and_target_are_blips_own_features():
    """Query = normalize(text_proj(CLS of the image-grounded encoder on [ENC] + edit)); target =
    normalize(vision_proj(ViT CLS)); both one token (Q = 1)."""
    model = _blip(query_head="joint", stage=2).eval()
    b = model.backbone
    frames = _frames(f=1)[:, 0]
    tokens = model.tokenize(EDITS)
    ids = tokens.input_ids.clone()
    ids[:, 0] = b.tokenizer.convert_tokens_to_ids("[ENC]")
    with torch.no_grad():
        vision = b.vision_model(pixel_values=frames).last_hidden_state
        hidden = b.text_encoder(input_ids=ids, attention_mask=tokens.attention_mask, encoder_hidden_states=vision).last_hidden_state
        expected_query = F.normalize(b.text_proj(hidden[:, 0]), dim=-1)
        expected_target = F.normalize(b.vision_proj(vision[:, 0]), dim=-1)
        query, target = model.encode_query(frames, EDITS), model.encode_target(frames)
    assert query.shape == target.shape == (4, 1, 16)
    torch.testing.assert_close(query[:, 0], expected_query, atol=1e-6, rtol=0)
    torch.testing.assert_close(target[:, 0], expected_target, atol=1e-6, rtol=0)
    assert model.encode_text(EDITS).shape == (4, 16)


@pytest.mark.parametrize("num_frames", [1, 4])
def test_xaligner_at_init_equals_the_covr_query(num_frames):
    xal = _blip().eval()
    covr = _blip(query_head="joint", stage=2).eval()
    covr.load_state_dict({k: v for k, v in xal.state_dict().items() if not k.startswith("xaligner.")}, strict=True)
    frames = _frames(f=num_frames)
    with torch.no_grad():
        q_x = xal.encode_query(frames, EDITS, CAPTIONS)
        q_c = covr.encode_query(frames, EDITS, CAPTIONS)
    assert q_x.shape == (4, 1, 16)
    torch.testing.assert_close(q_x, q_c, atol=0, rtol=0)
    assert xal.xaligner.frame_embedding.shape[-1] == xal.backbone.vision_width  # "queries" memory = ViT CLS per frame


@pytest.mark.parametrize("overrides", [{}, {"reference_frames": "all"}, {"xaligner": {"visual_memory": "patches"}}])
def test_padded_clips_equal_their_unpadded_selves(overrides):
    model = _open_gates(_blip(**overrides)).eval()
    assert_padded_batch_equals_samples_alone(model, torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool))


def test_stage2_trains_exactly_the_text_encoder_and_targets_stay_fixed():
    model = _blip(stage=2).train()
    text_encoder = {n for n, _ in model.named_parameters() if n.startswith(("backbone.text_encoder.", "backbone.text_proj."))}
    xaligner = {n for n, _ in model.named_parameters() if n.startswith("xaligner.")}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == text_encoder | xaligner
    assert model.backbone.target_path is None  # stage 2 trains nothing the target path uses
    frames, targets = _frames(f=2), _frames(f=1, seed=1)
    before, identity = model.encode_target(targets), model.target_identity
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss_fn = ContrastiveLoss(caption_weight=0.5)
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        loss_fn(model.encode_query(frames, EDITS, CAPTIONS), model.encode_target(targets), model.encode_text(EDITS))["loss"].backward()
        opt.step()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got <= text_encoder | xaligner and any(n.startswith("backbone.text_encoder.") for n in got)
    torch.testing.assert_close(model.encode_target(targets), before, atol=0, rtol=0)
    assert model.target_identity == identity and not model.backbone.vision_model.training


def test_training_vision_proj_freezes_a_target_copy():
    model = _blip(stage=2, text_encoder=["text_encoder.*", "vision_proj.*"])
    assert model.backbone.target_path is not None
    identity = model.target_identity
    with torch.no_grad():
        model.backbone.vision_proj.weight.add_(0.1)
    assert model.target_identity == identity


def test_tokenizer_without_enc_is_rejected():
    from covr.models.blip import BlipBackbone
    from covr.models.tokenizer import build_tokenizer

    model = _blip(query_head="joint", stage=2)
    with pytest.raises(ValueError, match=r"\[ENC\]"):
        BlipBackbone(model.backbone.to_transformers(), build_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"], "blip2"))
