"""Metrics vs hand-computed cases and independent brute-force implementations."""

from __future__ import annotations

import random

import pytest
from helpers_eval import ref_map, ref_recall

from covr.eval import metrics as M


def test_recall_hand_cases():
    ranked = [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "a"], ["x", "y", "z"]]
    targets = ["a", "a", "a", "a"]
    assert M.recall_at_k(ranked, targets, 1) == 25.0
    assert M.recall_at_k(ranked, targets, 2) == 50.0
    assert M.recall_at_k(ranked, targets, 3) == 75.0
    assert M.recall_at_k(ranked, targets, 50) == 75.0


def test_circo_ap_fewer_ground_truths_than_k():
    # |G| = 2 < K = 5: hits at ranks 1 and 3 -> (1/1 + 2/3) / 2
    ap = M.average_precision_at_k(["a", "x", "b", "y", "z"], {"a", "b"}, 5)
    assert ap == pytest.approx((1 + 2 / 3) / 2)
    # the second ground truth beyond K: (1/1) / min(2, 2)
    assert M.average_precision_at_k(["a", "x", "b"], {"a", "b"}, 2) == pytest.approx(0.5)


def test_circo_ap_more_ground_truths_than_k():
    # |G| = 10 > K = 5: hits at ranks 1 and 3 -> (1 + 2/3) / 5
    gts = {f"g{i}" for i in range(10)}
    ap = M.average_precision_at_k(["g0", "x", "g1", "y", "z", "g2"], gts, 5)
    assert ap == pytest.approx((1 + 2 / 3) / 5)
    assert M.map_at_k([["g0", "g1", "g2", "g3", "g4"]], [gts], 5) == pytest.approx(100.0)


def test_map_rejects_duplicates():
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        M.map_at_k([["a", "b", "a"]], [{"a"}], 3)


def test_cirr_subset_with_reference_among_members():
    members = ("ref", "a", "b", "c", "d", "e")
    # the full ranking still contains the reference and non-members: both are ignored
    ranked = [["z", "c", "ref", "a", "y", "e", "b", "d"]]
    assert M.subset_ranking(ranked[0], members, "ref") == ["c", "a", "e", "b", "d"]
    assert M.recall_subset_at_k(ranked, ["a"], [members], ["ref"], 1) == 0.0
    assert M.recall_subset_at_k(ranked, ["a"], [members], ["ref"], 2) == 100.0
    with pytest.raises(ValueError, match="not a non-reference member"):
        M.recall_subset_at_k(ranked, ["ref"], [members], ["ref"], 1)


def test_ties_in_ranked_lists_are_counted_by_position():
    # two equally scored items: the ranking (not the metric) decides; the metric reads positions only
    assert M.recall_at_k([["b", "a"]], ["a"], 1) == 0.0
    assert M.recall_at_k([["a", "b"]], ["a"], 1) == 100.0


def test_metrics_match_brute_force_on_random_lists():
    rng = random.Random(0)
    items = [f"i{n}" for n in range(40)]
    ranked = [rng.sample(items, 30) for _ in range(50)]
    targets = [rng.choice(items) for _ in range(50)]
    gts = [set(rng.sample(items, rng.randint(1, 12))) for _ in range(50)]
    for k in (1, 5, 10, 25, 50):
        assert M.recall_at_k(ranked, targets, k) == pytest.approx(ref_recall(ranked, targets, k))
        assert M.map_at_k(ranked, gts, k) == pytest.approx(ref_map(ranked, gts, k))


def test_subset_recall_matches_brute_force():
    rng = random.Random(1)
    items = [f"i{n}" for n in range(30)]
    subsets, refs, targets, ranked = [], [], [], []
    for _ in range(40):
        members = rng.sample(items, 6)
        subsets.append(members)
        refs.append(members[0])
        targets.append(rng.choice(members[1:]))
        ranked.append(rng.sample(items, 30))
    for k in (1, 2, 3):
        expected = 100.0 * sum(
            t in [x for x in r if x in s and x != ref][:k] for r, t, s, ref in zip(ranked, targets, subsets, refs)
        ) / len(ranked)
        assert M.recall_subset_at_k(ranked, targets, subsets, refs, k) == pytest.approx(expected)


def test_means_and_breakdown():
    assert M.webvid_covr_means({"R@1": 1, "R@5": 2, "R@10": 3, "R@50": 6}) == {"meanR3": 2.0, "meanR4": 3.0}
    assert M.cirr_average({"R@5": 60.0, "Rs@1": 70.0}) == {"Avg": 65.0}
    fiq = M.fashioniq_summary({"dress": {"R@10": 10, "R@50": 30}, "shirt": {"R@10": 20, "R@50": 40}})
    assert fiq["R@10"] == 15 and fiq["R@50"] == 35 and fiq["Avg"] == 25 and fiq["shirt/R@50"] == 40
    ranked, targets = [["a"], ["b"], ["a"]], ["a", "a", "a"]
    labels = ["x", "y", None]
    out = M.breakdown(labels, lambda rows: {"R@1": M.recall_at_k([ranked[i] for i in rows], [targets[i] for i in rows], 1)})
    assert out == {"x": {"R@1": 100.0, "queries": 1}, "y": {"R@1": 0.0, "queries": 1}}


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 ranked lists but 1 targets"):
        M.recall_at_k([["a"], ["b"]], ["a"], 1)
