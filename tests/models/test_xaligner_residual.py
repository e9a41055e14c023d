"""X-Aligner's residual branches: both parametrisations start exactly at the CoVR-2 query, the
first step's gradient reaches exactly the parts that can open the branches, gates get their own
learning rate, monitoring figures are what they say, and configs saved before `residual` existed
still rebuild (with gates, as they were trained)."""

from __future__ import annotations

import pytest
import torch

from conftest import open_xaligner, tiny_model_config
from covr.losses import ContrastiveLoss
from covr.models import build_retriever
from covr.training.optim import parameter_groups

EDITS = ["make it red", "move it to the left", "change the background to white", "replace the circle with a square"]
CAPTIONS = ["a blue circle", "", "a square on a black background", "a man with a dog"]
TARGET_CAPTIONS = ["a red circle", "a dog on the left", "a white background", "a square"]


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 3, 32, 32, generator=g), torch.randn(4, 2, 3, 32, 32, generator=g)


def _loss(model) -> torch.Tensor:
    reference, target = _batch()
    query = model.encode_query(reference, EDITS, CAPTIONS)
    return ContrastiveLoss(caption_weight=0.5)(query, model.encode_target(target), model.encode_text(TARGET_CAPTIONS))["loss"]


def _nonzero_grads(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("residual", ["output", "gate"])
def test_untrained_xaligner_is_the_joint_query_bit_for_bit(residual):
    xal = build_retriever(tiny_model_config(xaligner={"residual": residual})).eval()
    joint = build_retriever(tiny_model_config(query_head="joint", stage=2)).eval()
    missing, unexpected = joint.load_state_dict({k: v for k, v in xal.state_dict().items() if not k.startswith("xaligner.")}, strict=False)
    assert not unexpected and all(k.startswith("backbone.target_path.") for k in missing)  # stage 2's frozen copy
    reference, _ = _batch()
    with torch.no_grad():
        assert torch.equal(xal.encode_query(reference, EDITS, CAPTIONS), joint.encode_query(reference, EDITS, CAPTIONS))


def test_output_residual_first_step_reaches_every_branch_output_layer_and_nothing_inside():
    """Zero last layers: their weights and biases (and the output head) get gradient at step 1,
    every other X-Aligner weight gets exactly zero; after one Adam step all of them learn."""
    model = build_retriever(tiny_model_config(stage=1, xaligner={"residual": "output"})).train()
    outputs = {
        f"xaligner.blocks.{i}.{name}"
        for i, block in enumerate(model.xaligner.blocks)
        for layer in block.output_layers().values()
        for name in (n for n, p in block.named_parameters() if p is layer.weight or p is layer.bias)
    }
    assert len(outputs) == 2 * 2 * 5  # 2 blocks x (visual, caption, text, self, ffn) x (weight, bias)
    _loss(model).backward()
    assert _nonzero_grads(model) == outputs | {"xaligner.proj.weight", "xaligner.proj.bias"}
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4).step()
    model.zero_grad(set_to_none=True)
    _loss(model).backward()
    assert _nonzero_grads(model) == {n for n, p in model.named_parameters() if p.requires_grad}


def test_gate_residual_first_step_reaches_only_the_gates():
    model = build_retriever(tiny_model_config(stage=1)).train()  # the default
    _loss(model).backward()
    gates = {n for n, _ in model.named_parameters() if ".gates." in n}
    assert len(gates) == 10
    assert _nonzero_grads(model) == gates | {"xaligner.proj.weight", "xaligner.proj.bias"}


def test_gates_have_their_own_learning_rate_group():
    model = build_retriever(tiny_model_config(stage=2))
    groups = {g["name"]: g for g in parameter_groups(model, lr=1e-4, weight_decay=0.05, text_encoder_lr=1e-5, gate_lr_scale=100.0)}
    assert set(groups) == {"head/gate", "head/decay", "head/no_decay", "backbone/decay", "backbone/no_decay"}
    assert groups["head/gate"]["lr"] == pytest.approx(1e-2) and groups["head/gate"]["weight_decay"] == 0.0
    assert len(groups["head/gate"]["params"]) == 10
    assert groups["head/decay"]["lr"] == 1e-4 and groups["backbone/decay"]["lr"] == 1e-5
    output = build_retriever(tiny_model_config(stage=1, xaligner={"residual": "output"}))
    assert {g["name"] for g in parameter_groups(output, 1e-4, 0.05)} == {"head/decay", "head/no_decay"}


@pytest.mark.parametrize("residual", ["output", "gate"])
def test_recorded_figures_are_update_norms_relative_to_the_initial_tokens(residual):
    """Untrained: every update and the shift are exactly 0. Opened: the shift equals the distance
    between the aligner's output tokens and its input tokens, computed here from the hooks."""
    model = build_retriever(tiny_model_config(xaligner={"residual": residual})).eval()
    model.xaligner.record_stats = True
    reference, _ = _batch()
    with torch.no_grad():
        model.encode_query(reference, EDITS, CAPTIONS)
    stats = model.xaligner.stats
    assert {k for k in stats if k.startswith("update/")} == {f"update/b{i}.{n}" for i in range(2) for n in ("visual", "caption", "text", "self", "ffn")}
    assert all(float(v) == 0.0 for k, v in stats.items() if not k.startswith("gate/"))
    assert {k for k in stats if k.startswith("gate/")} == ({f"gate/b{i}.{n}" for i in range(2) for n in ("visual", "caption", "text", "self", "ffn")} if residual == "gate" else set())
    open_xaligner(model, gate=0.5)
    seen: dict[str, torch.Tensor] = {}
    model.xaligner.blocks[0].register_forward_pre_hook(lambda m, args: seen.update(z0=args[0]))  # returns None: args kept
    model.xaligner.blocks[-1].register_forward_hook(lambda m, args, out: seen.update(z=out))
    with torch.no_grad():
        model.encode_query(reference, EDITS, CAPTIONS)
    stats = model.xaligner.stats
    expected = (seen["z"] - seen["z0"]).norm(dim=-1).mean() / seen["z0"].norm(dim=-1).mean()
    torch.testing.assert_close(stats["shift"], expected)
    assert all(float(stats[f"update/b{i}.{n}"]) > 0 for i in range(2) for n in ("visual", "text", "self", "ffn"))
    if residual == "gate":
        assert float(stats["gate/b1.ffn"]) == pytest.approx(float(torch.tanh(torch.tensor(0.5))))


def test_configs_saved_before_residual_existed_rebuild_with_gates():
    legacy = tiny_model_config()
    legacy["xaligner"] = {**legacy["xaligner"], "gate_init": 0.0}  # what conf/model/head/xaligner.yaml used to save
    old = build_retriever(legacy)
    assert old.xaligner.cfg.residual == "gate" and len([k for k in old.state_dict() if ".gates." in k]) == 10
    with pytest.raises(ValueError, match="residual 'zero' is not one of"):
        build_retriever(tiny_model_config(xaligner={"residual": "zero"}))
