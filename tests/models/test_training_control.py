"""Two-stage training control: exactly the right parameters get gradients, frozen parts stay in
eval mode and outside autograd, the target path never moves."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model_config
from covr.losses import ContrastiveLoss
from covr.models import build_retriever
from covr.models.trainable import format_trainable_summary, trainable_summary

EDITS = ["make it red", "move it to the left", "change the background to white", "replace the circle with a square"]
CAPTIONS = ["a blue circle", "", "a square on a black background", "a man with a dog"]
TARGET_CAPTIONS = ["a red circle", "a dog on the left", "a white background", "a square"]


def _step(model, loss_fn, optimizer=None):
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(4, 2, 3, 32, 32, generator=g)
    tgt = torch.randn(4, 3, 32, 32, generator=g)
    model.zero_grad(set_to_none=True)
    query = model.encode_query(ref, EDITS, CAPTIONS)
    losses = loss_fn(query, model.encode_target(tgt), model.encode_text(TARGET_CAPTIONS))
    losses["loss"].backward()
    if optimizer is not None:
        optimizer.step()
    return losses["loss"]


def _with_grad(model):
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_stage1_only_xaligner_gets_gradients():
    model = build_retriever(tiny_model_config(stage=1)).train()
    loss_fn = ContrastiveLoss(caption_weight=0.5)
    xaligner = {n for n, _ in model.named_parameters() if n.startswith("xaligner.")}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == xaligner
    # first step: every branch starts at zero, so only its last layer (or gate) and the output head
    # carry gradient (exact sets per residual kind: tests/models/test_xaligner_residual.py)
    _step(model, loss_fn, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1))
    got = _with_grad(model)
    assert got <= xaligner
    assert {n for n in xaligner if n.startswith("xaligner.proj")} < got
    # once the branches are open every X-Aligner parameter learns, and still nothing else
    _step(model, loss_fn)
    assert _with_grad(model) == xaligner
    assert all(p.grad is None for n, p in model.named_parameters() if n not in xaligner)


def test_stage2_adds_exactly_the_text_encoder():
    model = build_retriever(tiny_model_config(stage=2)).train()
    loss_fn = ContrastiveLoss(caption_weight=0.5)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    _step(model, loss_fn, opt)
    _step(model, loss_fn)
    text_encoder = {
        n for n, _ in model.named_parameters()
        if n.startswith(("backbone.qformer.", "backbone.embeddings.", "backbone.text_projection.")) or n == "backbone.query_tokens"
    }
    xaligner = {n for n, _ in model.named_parameters() if n.startswith("xaligner.")}
    assert _with_grad(model) == text_encoder | xaligner
    frozen = [n for n, _ in model.named_parameters() if n not in text_encoder | xaligner]
    assert any(n.startswith("backbone.vision_model.") for n in frozen) and any("target_path" in n for n in frozen)
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)


def test_custom_text_encoder_list_and_typos():
    model = build_retriever(tiny_model_config(stage=2, text_encoder=["qformer.encoder.layer.1.*"]))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in names if not n.startswith("xaligner.")} == {
        n for n, _ in model.named_parameters() if n.startswith("backbone.qformer.encoder.layer.1.")
    }
    with pytest.raises(ValueError, match="match no parameter"):
        build_retriever(tiny_model_config(stage=2, text_encoder=["qformr.*"]))
    with pytest.raises(ValueError, match="stage 1 would train nothing"):
        build_retriever(tiny_model_config(query_head="joint", stage=1))


@pytest.mark.parametrize("stage", [1, 2])
def test_frozen_parts_stay_in_eval_mode_and_outside_autograd(stage):
    model = build_retriever(tiny_model_config(stage=stage)).train()
    assert model.xaligner.training
    assert not model.backbone.vision_model.training
    assert model.backbone.qformer.training == (stage == 2)
    assert all(not m.training for m in model.backbone.vision_model.modules())
    vision_out = {}

    def record(module, inputs, output):
        vision_out["grad"] = output.last_hidden_state.requires_grad

    model.backbone.vision_model.register_forward_hook(record)
    model.encode_query(torch.randn(2, 1, 3, 32, 32), EDITS[:2], CAPTIONS[:2])
    assert vision_out["grad"] is False


def test_target_path_is_frozen_through_stage2_training():
    model = build_retriever(tiny_model_config(stage=2)).train()
    frames = torch.randn(3, 2, 3, 32, 32)
    before = model.encode_target(frames)
    identity = model.target_identity
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    qformer_before = model.backbone.qformer.encoder.layer[0].attention.attention.query.weight.clone()
    _step(model, ContrastiveLoss(caption_weight=0.5), opt)
    assert not torch.equal(qformer_before, model.backbone.qformer.encoder.layer[0].attention.attention.query.weight)
    torch.testing.assert_close(model.encode_target(frames), before, atol=0, rtol=0)
    assert model.target_identity == identity
    assert model.encode_target(frames).requires_grad is False


def test_trainable_summary_counts():
    model = build_retriever(tiny_model_config(stage=1))
    rows = trainable_summary(model)
    by_name = {name: (t, n) for name, t, n in rows}
    xal = sum(p.numel() for n, p in model.named_parameters() if n.startswith("xaligner."))
    assert sum(t for name, (t, n) in by_name.items() if name.startswith("xaligner")) == xal
    assert sum(t for _, t, _ in rows) == xal
    assert sum(n for _, _, n in rows) == sum(p.numel() for p in model.parameters())
    assert by_name["backbone.qformer"][0] == 0
    table = format_trainable_summary(rows)
    assert "backbone.vision_model" in table and table.splitlines()[-1].startswith("total")
