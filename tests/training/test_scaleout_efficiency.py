"""Efficiency options change speed and memory, not results: activation checkpointing gives identical
gradients, bf16 autocast trains with the loss in fp32, and the training benchmark runs (smoke, CPU)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from conftest import open_xaligner, tiny_model_config
from covr.losses import ContrastiveLoss, hn_nce
from covr.models import build_retriever
from helpers_training import REPO

EDITS = ["make it red", "move it to the left", "make the square bigger", "turn it green"]
CAPTIONS = ["a blue circle", "", "a square on a black background", "a man with a dog"]
TARGET_CAPTIONS = ["a red circle", "a dog on the left", "a bigger square", "a green circle"]


def _model(stage: int, dropout: float = 0.0, family: str = "blip2"):
    cfg = tiny_model_config(family, stage=stage, xaligner={"dropout": dropout})
    text = cfg["backbone"]["spec"]["qformer_config" if family == "blip2" else "text_config"]
    text.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    model = open_xaligner(build_retriever(cfg).train())  # every X-Aligner weight on the gradient path
    return model


def _loss(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    reference, target = torch.randn(4, 3, 3, 32, 32, generator=g), torch.randn(4, 2, 3, 32, 32, generator=g)
    query = model.encode_query(reference, EDITS, CAPTIONS)
    return ContrastiveLoss(video_weight=0.5, caption_weight=0.5)(query, model.encode_target(target), model.encode_text(TARGET_CAPTIONS))["loss"]


def _step(model, checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """Loss, gradients and bytes saved for backward (distinct non-parameter storages) of one step."""
    model.set_gradient_checkpointing(checkpointing)
    model.zero_grad(set_to_none=True)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    torch.manual_seed(1)  # same dropout masks in both runs (checkpointing replays the RNG state)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = _loss(model)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, sum(saved.values())


@pytest.mark.parametrize("family,stage", [("blip2", 0), ("blip2", 1), ("blip2", 2), ("blip", 2)])
def test_activation_checkpointing_gives_identical_gradients_with_less_memory(family, stage):
    """Dropout on (Q-Former / BERT and X-Aligner): checkpointing replays the RNG state."""
    model = _model(stage, dropout=0.1, family=family)
    loss, grads, memory = _step(model, checkpointing=False)
    loss_ckpt, grads_ckpt, memory_ckpt = _step(model, checkpointing=True)
    assert torch.equal(loss, loss_ckpt)
    assert grads.keys() == grads_ckpt.keys()
    assert any(k.startswith("xaligner.blocks.") for k in grads) == (stage > 0)
    assert any(k.startswith(("backbone.qformer.", "backbone.text_encoder.")) for k in grads) == (stage != 1)
    assert any(k.startswith("backbone.vision_model.") for k in grads) == (stage == 0)
    for name, grad in grads.items():
        assert torch.equal(grad, grads_ckpt[name]), name
    assert memory_ckpt < 0.5 * memory
    model.set_gradient_checkpointing(False)
    assert _step(model, checkpointing=False)[2] > 2 * memory_ckpt  # switched off again: activations are kept


def test_loss_is_computed_in_fp32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    q, t = (torch.nn.functional.normalize(torch.randn(64, 32, generator=g), dim=-1) for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = hn_nce(q, t)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, hn_nce(q, t))


def test_bf16_autocast_training_step():
    """What trainer precision bf16-mixed runs: forward under autocast (bf16 matmuls, SDPA), fp32 weights,
    loss and gradients; close to the fp32 step."""
    model = _model(stage=2)
    loss32 = _loss(model)
    loss32.backward()
    grads32 = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16 = _loss(model)
    loss16.backward()
    assert loss16.dtype == torch.float32 and loss16.item() == pytest.approx(loss32.item(), rel=5e-3)
    for name, p in model.named_parameters():
        if name in grads32:
            assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name
    flat32 = torch.cat([g.flatten() for g in grads32.values()])
    flat16 = torch.cat([model.get_parameter(n).grad.flatten() for n in grads32])
    assert torch.nn.functional.cosine_similarity(flat16, flat32, dim=0) > 0.99


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("benchmark_train", REPO / "tools" / "benchmark_train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("benchmark_train", module)
    spec.loader.exec_module(module)
    return module


def test_benchmark_train_smoke(capsys, tmp_path):
    bench = _benchmark_module()
    threads = torch.get_num_threads()
    assert bench.main(["--threads", "1", "--warmup", "1", "--steps", "2", "--json", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert len(rows) == 2 * 2 * 3  # stages x query frames x settings
    assert {(r[0], r[1], r[2]) for r in rows} == {(s, f, n) for s in "12" for f in "14" for n in ("baseline", "covr", "covr+ckpt")}
    for row in rows:
        assert float(row[3]) > 0 and (row[2] != "baseline" or row[-2:] == ["1.00", "1.00"])
    memory = {(r[0], r[1], r[2]): float(r[5]) for r in rows}  # activation MiB: checkpointing keeps far less
    assert all(memory[(s, f, "covr+ckpt")] < memory[(s, f, "covr")] for s in "12" for f in "14")
    torch.set_num_threads(threads)


def test_benchmark_composes_the_real_size_model():
    bench = _benchmark_module()
    cfg = bench.model_config("blip2_vitg", 224, [])
    assert cfg["backbone"]["weights"] is None and cfg["backbone"]["image_size"] == 224
    assert cfg["backbone"]["spec"]["vision_config"]["hidden_size"] == 1408 and cfg["backbone"]["spec"]["num_query_tokens"] == 32
    assert len(cfg["backbone"]["tokenizer"]) == 30522 and cfg["query_head"] == "xaligner"
