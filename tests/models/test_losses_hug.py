"""HUG (../shared/guide/seed-methods.md) against plain loop transcriptions of the guide's formulas,
values and gradients, on random tensors; the uncertainty heads on a tiny model (every trainable
part gets a gradient); retrieval by the uncertainty-aware distance."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import open_xaligner, tiny_model_config
from covr.losses import HUGLoss, build_objective
from covr.losses.hug import coordination_loss, fine_grained_loss, gaussian_distance, holistic_loss
from covr.models import build_retriever
from covr.models.checkpoint_io import CheckpointError
from covr.models.uncertainty import UncertaintyHeads
from covr.similarity import similarity, with_variance


def plain_distance(mq, vq, mc, vc):
    """d(q, c) = ||mu_q - mu_c||^2 + ||s_q||^2 + ||s_c||^2, summed element by element."""
    return sum((mq[k, e] - mc[k, e]) ** 2 + vq[k, e] + vc[k, e] for k in range(mq.shape[0]) for e in range(mq.shape[1]))


def plain_hug(mq, vq, mc, vc, a, b, sm, smm, weights=(1.0, 0.5, 0.1), tau=0.07, margin=0.2):
    """The whole objective with Python loops over rows, tokens and candidates (float64 tensors in,
    a scalar tensor out so that autograd gives the reference gradients)."""
    n, q, _ = mq.shape
    holistic = 0.0
    for i in range(n):
        holistic = holistic - F.logsigmoid(-a * plain_distance(mq[i], vq[i], mc[i], vc[i]) - b)
        for j in range(n):
            if j != i:
                holistic = holistic - F.logsigmoid(a * plain_distance(mq[i], vq[i], mc[j], vc[j]) + b)
    holistic = holistic / n
    fine = 0.0
    for i in range(n):
        for k in range(q):
            u = mq[i, k] / mq[i, k].norm()
            cands = [(mc[j, k] / mc[j, k].norm()) for j in range(n)] + [mc[i, m] / mc[i, m].norm() for m in range(q) if m != k]
            logits = torch.stack([(u * c).sum() / tau for c in cands])
            fine = fine + torch.logsumexp(logits, 0) - logits[i]
    fine = fine / (n * q)
    coord = sum(torch.clamp(margin - (smm[i].mean() - sm[i].mean()), min=0.0) for i in range(n)) / n
    return weights[0] * holistic + weights[1] * fine + weights[2] * coord, holistic, fine, coord


def _inputs(seed: int, n: int = 4, q: int = 3, e: int = 5):
    g = torch.Generator().manual_seed(seed)
    mq = F.normalize(torch.randn(n, q, e, generator=g, dtype=torch.float64), dim=-1)
    mc = torch.randn(n, q, e, generator=g, dtype=torch.float64) * 0.5  # frame-pooled targets: not unit norm
    vq = torch.rand(n, q, e, generator=g, dtype=torch.float64) * 0.05
    vc = torch.rand(n, q, e, generator=g, dtype=torch.float64) * 0.05
    sm = torch.rand(n, q, e, generator=g, dtype=torch.float64)
    smm = torch.rand(n, q, e, generator=g, dtype=torch.float64)
    a = torch.tensor(0.8, dtype=torch.float64)
    b = torch.tensor(-1.3, dtype=torch.float64)
    return [t.requires_grad_() for t in (mq, vq, mc, vc, a, b, sm, smm)]


@pytest.mark.parametrize("seed", [0, 1])
def test_each_hug_term_equals_the_formula(seed):
    mq, vq, mc, vc, a, b, sm, smm = _inputs(seed)
    _, holistic, fine, coord = plain_hug(mq, vq, mc, vc, a, b, sm, smm)
    d = gaussian_distance(mq, vq, mc, vc)
    for i in range(4):
        for j in range(4):
            assert d[i, j].item() == pytest.approx(plain_distance(mq[i], vq[i], mc[j], vc[j]).item(), rel=1e-12)
    assert holistic_loss(d, a, b).item() == pytest.approx(holistic.item(), rel=1e-10)
    assert fine_grained_loss(mq, mc, 0.07).item() == pytest.approx(fine.item(), rel=1e-10)
    assert coordination_loss(sm, smm, 0.2).item() == pytest.approx(coord.item(), rel=1e-10)


def test_hug_loss_value_and_gradients_equal_the_formula():
    """HUGLoss (weights 1 / 0.5 / 0.1) and its gradient with respect to every input, scale and bias."""
    inputs = _inputs(2)
    mq, vq, mc, vc, a, b, sm, smm = inputs
    reference, *_ = plain_hug(*inputs)
    expected = torch.autograd.grad(reference, inputs)
    loss = HUGLoss()  # the guide's weights are the defaults
    got = loss(mq, vq, mc, vc, a, b, sm, smm)
    assert set(got) == {"holistic", "fine_grained", "coordination", "scale", "bias", "loss"}
    assert got["loss"].item() == pytest.approx(reference.item(), rel=1e-6)  # the loss runs in fp32
    grads = torch.autograd.grad(got["loss"], inputs)
    for name, g, e in zip(("mu_q", "var_q", "mu_c", "var_c", "a", "b", "sigma_M", "sigma_M mismatched"), grads, expected):
        torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=1e-6, msg=name)


def test_combined_variance_is_the_dynamic_weighting():
    g = torch.Generator().manual_seed(3)
    image, multimodal = torch.rand(2, 3, 4, generator=g), torch.rand(2, 3, 4, generator=g)
    text = torch.rand(2, 1, 4, generator=g)  # one text sigma for every query token
    got = UncertaintyHeads.combined_variance([image, text, multimodal])
    for i in range(2):
        for k in range(3):
            for e in range(4):
                s2 = [image[i, k, e].item() ** 2, text[i, 0, e].item() ** 2, multimodal[i, k, e].item() ** 2]
                z = sum(math.exp(-v) for v in s2)
                assert got[i, k, e].item() == pytest.approx(sum(math.exp(-v) / z * v for v in s2), rel=1e-5)


def test_uncertainty_similarity_ranks_by_the_gaussian_distance():
    """similarity 'uncertainty' = -(||mu_q - mu_c||^2 + ||s_c||^2): the distance up to the query's own
    variance, which is the same for every item."""
    g = torch.Generator().manual_seed(4)
    query, gallery = torch.randn(3, 2, 4, generator=g), torch.randn(5, 2, 4, generator=g)
    variance = lambda tokens: tokens.abs() * 0.1  # noqa: E731  (any per-token function of the gallery tokens)
    scores = similarity(query, with_variance(gallery, variance, chunk=2), "uncertainty")
    for i in range(3):
        for j in range(5):
            d = plain_distance(query[i], torch.zeros(2, 4), gallery[j], variance(gallery[j]))
            assert scores[i, j].item() == pytest.approx(-d.item(), rel=1e-5)


def test_every_trainable_part_gets_a_gradient_from_hug():
    """Stage 2 with X-Aligner and the heads: X-Aligner, the Q-Former's text path, g_V, g_T, g_M, a and b
    (no no_grad anywhere on the query side, unlike HUG's public code)."""
    model = open_xaligner(build_retriever(tiny_model_config(stage=2, uncertainty={"num_heads": 2})).eval())
    g = torch.Generator().manual_seed(0)
    frames, targets = torch.randn(4, 2, 3, 32, 32, generator=g), torch.randn(4, 2, 3, 32, 32, generator=g)
    edits = ["make it red", "move it up", "make it blue", "turn it green"]
    query = model.encode_gaussian_query(frames, edits, ["a dog", "", "a cat", ""], None, edits[1:] + edits[:1])
    torch.testing.assert_close(query.mean, model.encode_query(frames, edits, ["a dog", "", "a cat", ""]), rtol=0, atol=0)
    target = model.encode_target(targets)
    heads = model.uncertainty
    out = HUGLoss(caption_weight=0.5)(query.mean, query.variance, target, model.target_variance(target), heads.scale, heads.bias,
                                      query.multimodal_sigma, query.mismatched_sigma, model.encode_text(["x", "y", "z", "w"]))  # fmt: skip
    out["loss"].backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("backbone.qformer.") for n in trainable) and any(n.startswith("uncertainty.image.") for n in trainable)
    missing = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    # the Q-Former's key biases get exactly 0 (softmax ignores a shift); nothing else may be left out
    assert [n for n in missing if not n.endswith("key.bias")] == []
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


def test_loss_hug_needs_the_heads_and_composed_queries():
    with pytest.raises(ValueError, match="stage 0"):
        build_objective({"kind": "hug", "hug": {}}, stage=0)
    with pytest.raises(ValueError, match="memory bank"):
        build_objective({"kind": "hug", "hug": {}, "memory_bank": {"size": 8}}, stage=1, embed_dim=4)
    model = build_retriever(tiny_model_config())
    with pytest.raises(CheckpointError, match="needs a model trained with loss=hug"):
        model.target_variance(torch.zeros(1, 4, 16))
    with pytest.raises(ValueError, match="token embeddings"):
        HUGLoss()(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 4), torch.zeros(2, 4), torch.ones(()), torch.zeros(()))
