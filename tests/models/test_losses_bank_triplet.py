"""Memory-bank negatives and ReCALL's intra-group triplet term against plain loop transcriptions of
their formulas (values and gradients); the bank's FIFO, duplicate and checkpoint behaviour."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from covr.losses import ContrastiveLoss, MemoryBank, group_triplet_loss, hn_nce, stable_ids


def plain_hn_nce_with_bank(q, t, bank, scale, alpha, beta, tau):
    """Row i: negatives = batch j != i plus bank entries k with scale[i, k] > 0; HN-NCE weights
    (n_neg) exp(beta S) / sum exp(beta S) over all of them; a bank term times scale[i, k].
    Columns: plain HN-NCE over the batch. Loops, float64 tensors (autograd gives the gradients)."""
    s, sb = q @ t.T / tau, q @ bank.T / tau
    b = s.shape[0]
    rows = 0.0
    for i in range(b):
        negatives = [(s[i, j], 1.0) for j in range(b) if j != i] + [(sb[i, k], scale[i, k].item()) for k in range(bank.shape[0]) if scale[i, k] > 0]
        z = sum(torch.exp(beta * v) for v, _ in negatives)
        acc = alpha * torch.exp(s[i, i])
        for v, m in negatives:
            acc = acc + m * len(negatives) * torch.exp(beta * v) / z * torch.exp(v)
        rows = rows + torch.log(acc) - s[i, i]
    cols = 0.0
    for j in range(b):
        z = sum(torch.exp(beta * s[i, j]) for i in range(b) if i != j)
        acc = alpha * torch.exp(s[j, j]) + sum((b - 1) * torch.exp(beta * s[i, j]) / z * torch.exp(s[i, j]) for i in range(b) if i != j)
        cols = cols + torch.log(acc) - s[j, j]
    return rows / b + cols / b


def plain_entropy_scale(q, bank, usable, tau, weight=1.0):
    out = torch.zeros(q.shape[0], bank.shape[0], dtype=torch.float64)
    keep = [k for k in range(bank.shape[0]) if usable[k]]
    for i in range(q.shape[0]):
        logits = [float(q[i] @ bank[k]) / tau for k in keep]
        top = max(logits)
        p = [math.exp(v - top) for v in logits]
        p = [v / sum(p) for v in p]
        h = -sum(v * math.log(v) for v in p if v > 0) / math.log(len(keep))
        for k in keep:
            out[i, k] = weight * (1.0 - h)
    return out


def _unit(g, *shape):
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_hn_nce_with_bank_negatives_equals_the_formula(beta):
    g = torch.Generator().manual_seed(int(beta * 10))
    q, t, bank = _unit(g, 5, 8).requires_grad_(), _unit(g, 5, 8).requires_grad_(), _unit(g, 6, 8)
    scale = torch.rand(5, 6, generator=g, dtype=torch.float64)
    scale[:, 2] = 0.0  # an entry showing a current target: left out
    scale[1, 4] = 0.0
    expected = plain_hn_nce_with_bank(q, t, bank, scale, 1.0, beta, 0.07)
    got = hn_nce(q, t, 1.0, beta, 0.07, bank, scale)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    for a, b in zip(torch.autograd.grad(got, (q, t)), torch.autograd.grad(expected, (q, t))):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-6)
    no_bank = hn_nce(q, t, 1.0, beta, 0.07, bank, torch.zeros_like(scale))  # every entry left out = plain HN-NCE
    assert no_bank.item() == pytest.approx(hn_nce(q, t, 1.0, beta, 0.07).item(), rel=1e-6)


def test_bank_is_fifo_without_duplicates_of_the_current_batch_and_weights_by_entropy():
    g = torch.Generator().manual_seed(1)
    bank = MemoryBank(size=5, dim=4)
    first, second = _unit(g, 3, 4).float(), _unit(g, 4, 4).float()
    bank.push(first, torch.tensor([10, 11, 12]))
    bank.push(second, torch.tensor([13, 14, 10, 15]))  # 7 entries into 5 slots: the two oldest go
    embeddings, ids = bank.contents()
    assert ids.tolist() == [12, 13, 14, 10, 15]
    torch.testing.assert_close(embeddings, torch.cat([first[2:], second]))
    query = _unit(g, 3, 4).float()
    got, scale = bank.negatives(query, torch.tensor([14, 99]), tau=0.07)  # 14 is a target of this batch
    usable = ids != 14
    assert (scale[:, ~usable] == 0).all()
    torch.testing.assert_close(scale.double(), plain_entropy_scale(query.double(), got.double(), usable, 0.07), rtol=1e-5, atol=1e-6)
    plain = MemoryBank(size=5, dim=4, entropy_weighting=False, weight=0.5)
    plain.push(second, torch.tensor([13, 14, 10, 15]))
    assert plain.negatives(query, torch.tensor([10]), 0.07)[1].tolist() == [[0.5, 0.5, 0.0, 0.5]] * 3


def test_contrastive_loss_fills_its_bank_in_training_and_saves_it():
    g = torch.Generator().manual_seed(2)
    loss = ContrastiveLoss(beta=0.0, memory_bank={"size": 6}, embed_dim=4)
    assert set(loss.state_dict()) == {"bank.embeddings", "bank.ids", "bank.filled", "bank.next"}
    steps = [(_unit(g, 3, 4).float(), _unit(g, 3, 4).float(), [f"v{i}" for i in ids]) for ids in ([1, 2, 3], [4, 2, 5], [6, 7, 8])]
    first = loss(*steps[0][:2], target_ids=steps[0][2], reference_ids=["r"] * 3)
    assert first["bank_used"].item() == 0 and first["video"].item() == pytest.approx(hn_nce(steps[0][0], steps[0][1], beta=0.0).item(), rel=1e-6)
    query = steps[1][0].clone().requires_grad_()
    second = loss(query, steps[1][1], target_ids=steps[1][2], reference_ids=["r"] * 3)
    assert second["bank_used"].item() == 2  # v2 is a target of this batch again: left out
    second["loss"].backward()  # after the push that followed the loss: the bank it used was not overwritten
    assert query.grad is not None and query.grad.abs().sum() > 0
    loss.eval()
    loss(*steps[2][:2], target_ids=steps[2][2], reference_ids=["r"] * 3)  # not training: the bank stays
    assert loss.bank.ids[: int(loss.bank.filled)].tolist() == stable_ids(["v1", "v2", "v3", "v4", "v2", "v5"]).tolist()
    restored = ContrastiveLoss(beta=0.0, memory_bank={"size": 6}, embed_dim=4)
    restored.load_state_dict(loss.state_dict())
    torch.testing.assert_close(restored.bank.contents()[0], loss.bank.contents()[0], rtol=0, atol=0)


def plain_triplet(q, t, groups, targets, margin):
    total, count = 0.0, 0
    for i in range(len(groups)):
        for j in range(len(groups)):
            if groups[i] == groups[j] and targets[i] != targets[j]:
                total = total + torch.clamp(margin - (q[i] @ t[i]) + (q[i] @ t[j]), min=0.0)
                count += 1
    return total / count


def test_group_triplet_loss_equals_the_formula():
    g = torch.Generator().manual_seed(3)
    q, t = _unit(g, 7, 6).requires_grad_(), _unit(g, 7, 6).requires_grad_()
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 0])
    targets = torch.tensor([5, 6, 7, 8, 9, 10, 5])  # rows 0 and 6: the same target video, not a negative pair
    expected = plain_triplet(q, t, groups.tolist(), targets.tolist(), 0.2)
    got = group_triplet_loss(q, t, groups, targets, 0.2)
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)
    for a, b in zip(torch.autograd.grad(got, (q, t)), torch.autograd.grad(expected, (q, t))):
        torch.testing.assert_close(a, b)
    alone = group_triplet_loss(q, t, torch.arange(7), targets, 0.2)  # no group with two rows: 0, graph kept
    assert alone.item() == 0.0 and alone.requires_grad


def test_recall_loss_is_infonce_plus_triplet_with_cosines_of_the_pooled_embeddings():
    g = torch.Generator().manual_seed(4)
    query, target = torch.randn(6, 3, 4, generator=g), torch.randn(6, 3, 4, generator=g)  # [B, Q, E] tokens
    refs, tgts = ["a", "a", "b", "b", "b", "c"], [f"t{i}" for i in range(6)]
    loss = ContrastiveLoss(beta=0.0, tau=0.02, video_weight=0.5, triplet_weight=0.5, triplet_margin=0.2)
    out = loss(query, target, reference_ids=refs, target_ids=tgts)
    pq, pt = query.mean(1), target.mean(1)
    triplet = plain_triplet(F.normalize(pq, dim=-1).double(), F.normalize(pt, dim=-1).double(), refs, tgts, 0.2)
    logits = pq @ pt.T / 0.02
    infonce = F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6))
    assert out["triplet"].item() == pytest.approx(triplet.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.5 * infonce.item() + 0.5 * triplet.item(), rel=1e-5)
