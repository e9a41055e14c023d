"""Every score fusion of covr.eval.fusion against an independent plain-Python implementation of the
guide's formula (../shared/guide/seed-methods.md), on random inputs with exact ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from covr.eval import fusion as FU


def unit(v):
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v] if norm > 0 else [0.0] * len(v)


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def add(a, b, wa=1.0, wb=1.0):
    return [wa * x + wb * y for x, y in zip(a, b)]


def cos(a, b):
    return dot(unit(a), unit(b))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_paracosm_equals_the_formula(rng):
    b, n, e = 3, 7, 5
    m, d, t = (rng.normal(size=(b, e)) for _ in range(3))
    x, twin = rng.normal(size=(n, e)), rng.normal(size=(n, e))
    got = FU.paracosm_scores(*(torch.tensor(a) for a in (m, d, t, x, twin)))
    for i in range(b):
        query = add(unit(add(list(m[i]), list(d[i]))), unit(list(t[i])), 0.3, 0.7)
        for j in range(n):
            target = add(unit(list(x[j])), unit(list(twin[j])))
            assert got[i, j].item() == pytest.approx(dot(query, target), abs=1e-5)


def ref_ranks(scores):
    """1-based ranks by (score desc, index asc), one list at a time."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    out = [0] * len(scores)
    for position, i in enumerate(order, start=1):
        out[i] = position
    return out


def test_xr_stage_one_and_reciprocal_rank_fusion_equal_the_formula(rng):
    b, v, n, e = 2, 3, 9, 4
    desc = rng.normal(size=(b, v, e))
    images, captions = rng.normal(size=(n, e)), rng.normal(size=(n, e))
    captions[4] = captions[2]
    images[4] = images[2]  # two gallery items that tie exactly in every variant
    valid = np.array([[True, True, False], [True, True, True]])
    variants = FU.xr_variant_scores(torch.tensor(desc), torch.tensor(images), torch.tensor(captions))
    fused = FU.reciprocal_rank_fusion(variants, 60, torch.tensor(valid))
    for i in range(b):
        expected = [0.0] * n
        for k in range(v):
            s = [0.85 * cos(list(desc[i, k]), list(images[j])) + 0.15 * cos(list(desc[i, k]), list(captions[j])) for j in range(n)]
            assert variants[i, k].tolist() == pytest.approx(s, abs=1e-5)
            if valid[i, k]:
                expected = [acc + 1.0 / (60 + r) for acc, r in zip(expected, ref_ranks(variants[i, k].tolist()))]
        assert fused[i].tolist() == pytest.approx(expected, abs=1e-7)
    assert (FU.ranks(variants)[..., 2] < FU.ranks(variants)[..., 4]).all()  # the exact tie: lower index first


def test_xr_stage_two_equals_a_stable_resort_of_the_stage_one_list(rng):
    stage1 = torch.tensor(rng.normal(size=(2, 12)), dtype=torch.float32)
    stage1[0, 5] = stage1[0, 3]  # an exact tie in stage 1
    passed = torch.tensor(rng.integers(0, 3, size=(2, 12)), dtype=torch.float32)
    top = 6
    got = FU.xr_rerank(stage1, passed, top)
    for i in range(2):
        s = stage1[i].tolist()
        shortlist = sorted(range(12), key=lambda j: (-s[j], j))[:top]
        low, high = min(s[j] for j in shortlist), max(s[j] for j in shortlist)
        score = {j: passed[i, j].item() * (s[j] - low) / (high - low) for j in shortlist}
        expected_order = sorted(shortlist, key=lambda j: -score[j])  # stable: equal products keep stage-1 order
        got_order = sorted(shortlist, key=lambda j: (-got[i, j].item(), j))
        assert got_order == expected_order
        for j in range(12):
            if j in score:
                assert got[i, j].item() == pytest.approx(score[j], abs=2e-6)  # the tie-break adds at most 1e-6
            else:
                assert got[i, j].item() == float("-inf")


def test_min_max_of_a_constant_row_is_one():
    assert FU.min_max(torch.tensor([[2.0, 2.0, 2.0]])).tolist() == [[1.0, 1.0, 1.0]]


@pytest.mark.parametrize("preset", sorted(FU.CVSI_WEIGHTS))
def test_cvsi_weighted_parts_equal_the_double_sum_of_cosines(rng, preset):
    query_weights, gallery_weights = FU.CVSI_WEIGHTS[preset]
    b, n, e = 3, 6, 5
    q = rng.normal(size=(b, len(query_weights), e))
    g = rng.normal(size=(n, len(gallery_weights), e))
    got = FU.weighted_part_scores(torch.tensor(q), query_weights, torch.tensor(g), gallery_weights)
    for i in range(b):
        for j in range(n):
            expected = sum(
                a * w * cos(list(q[i, p]), list(g[j, r])) for p, a in enumerate(query_weights) for r, w in enumerate(gallery_weights)
            )  # fmt: skip
            assert got[i, j].item() == pytest.approx(expected, abs=1e-5)


def test_a_missing_part_contributes_nothing_and_weights_must_match_parts():
    q = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # second part absent (zeros)
    g = torch.tensor([[[1.0, 0.0]]])
    assert FU.weighted_part_scores(q, (0.6, 0.4), g, (1.0,)).item() == pytest.approx(0.6)
    with pytest.raises(ValueError, match="2 parts but 3 weights"):
        FU.fuse_parts(q, (0.2, 0.6, 0.2))
