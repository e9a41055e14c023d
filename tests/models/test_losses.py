"""HN-NCE against a direct transcription of the formula, InfoNCE at beta = 0, the caption term."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from covr.losses import ContrastiveLoss, hn_nce


def reference_hn_nce(q, t, alpha, beta, tau):
    """Loops over the formula in ../shared/guide/recipe.md, nothing shared with covr.losses."""
    s = (q.double() @ t.double().T) / tau
    b = s.shape[0]

    def one_direction(m):
        total = 0.0
        for i in range(b):
            z = sum(math.exp(beta * m[i, k].item()) for k in range(b) if k != i)
            acc = alpha * math.exp(m[i, i].item())
            for j in range(b):
                if j != i:
                    acc += (b - 1) * math.exp(beta * m[i, j].item()) / z * math.exp(m[i, j].item())
            total += math.log(acc) - m[i, i].item()
        return total / b

    return one_direction(s) + one_direction(s.T)


@pytest.mark.parametrize("alpha,beta,tau,b", [(1.0, 0.5, 0.07, 6), (1.0, 0.0, 0.07, 5), (0.7, 1.3, 0.1, 8), (2.0, 0.5, 0.5, 2)])
def test_hn_nce_equals_formula(alpha, beta, tau, b):
    g = torch.Generator().manual_seed(b)
    q = F.normalize(torch.randn(b, 16, generator=g), dim=-1)
    t = F.normalize(torch.randn(b, 16, generator=g), dim=-1)
    assert hn_nce(q, t, alpha, beta, tau).item() == pytest.approx(reference_hn_nce(q, t, alpha, beta, tau), rel=1e-5)


def test_beta_zero_is_symmetric_cross_entropy():
    g = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(7, 8, generator=g), dim=-1)
    t = F.normalize(torch.randn(7, 8, generator=g), dim=-1)
    logits = q @ t.T / 0.07
    labels = torch.arange(7)
    expected = F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)
    torch.testing.assert_close(hn_nce(q, t, alpha=1.0, beta=0.0), expected)


def test_hard_negatives_weigh_more():
    """With beta > 0 a hard negative raises the loss more than with beta = 0."""
    q = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]), dim=-1)
    t = F.normalize(torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.72, 0.69]]), dim=-1)
    assert hn_nce(q, t, beta=2.0) > hn_nce(q, t, beta=0.0)


def test_gradient_matches_formula_by_autograd():
    g = torch.Generator().manual_seed(5)
    q = F.normalize(torch.randn(4, 8, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    t = F.normalize(torch.randn(4, 8, generator=g, dtype=torch.float64), dim=-1)
    hn_nce(q, t, 1.0, 0.5, 0.07).backward()
    eps = 1e-6
    numeric = torch.zeros_like(q)
    for i in range(4):
        for k in range(8):
            d = torch.zeros_like(q)
            d[i, k] = eps
            numeric[i, k] = (reference_hn_nce(q + d, t, 1.0, 0.5, 0.07) - reference_hn_nce(q - d, t, 1.0, 0.5, 0.07)) / (2 * eps)
    torch.testing.assert_close(q.grad, numeric, atol=1e-5, rtol=1e-4)


def test_contrastive_loss_pools_tokens_and_adds_caption_term():
    g = torch.Generator().manual_seed(9)
    q = F.normalize(torch.randn(5, 4, 8, generator=g), dim=-1)
    t = F.normalize(torch.randn(5, 4, 8, generator=g), dim=-1)
    c = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    out = ContrastiveLoss(alpha=1.0, beta=0.5, tau=0.07, video_weight=0.5, caption_weight=0.5)(q, t, c)
    video = reference_hn_nce(q.mean(1), t.mean(1), 1.0, 0.5, 0.07)
    caption = reference_hn_nce(q.mean(1), c, 1.0, 0.5, 0.07)
    assert out["video"].item() == pytest.approx(video, rel=1e-5)
    assert out["caption"].item() == pytest.approx(caption, rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.5 * video + 0.5 * caption, rel=1e-5)
    with pytest.raises(ValueError, match="target caption"):
        ContrastiveLoss(caption_weight=0.5)(q, t)
