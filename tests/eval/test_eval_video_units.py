"""The parts the composed-video benchmarks added, each against brute force or hand-computed values:
top-K within per-query galleries, shifted masks, the new metrics, chance levels, text rules, clip
names, and the per-item gallery cache reused across galleries."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from helpers_eval import ColourRetriever
from layouts_video import clip_video

from covr.eval import metrics as M
from covr.eval.chance import expected_recall
from covr.eval.datasets.egocvr import clip_span, narration
from covr.eval.encoding import FrameOptions
from covr.eval.gallery_cache import cached_gallery
from covr.eval.texts import numbers_to_words, tf_covr_clean
from covr.eval.topk import topk_similarity, topk_within


def brute_within(query, gallery, candidates, k, exclude, mask_value, subtract):
    """Loop reference: score each candidate, mask excluded ones (set or shift), sort (-score, index)."""
    out = []
    for row, members in enumerate(candidates):
        scored = []
        for c in sorted(set(members)):
            s = float(query[row] @ gallery[c])
            if c in exclude[row]:
                if mask_value is None:
                    continue
                s = s + mask_value if subtract else mask_value
            scored.append((-s, c))
        out.append([c for _, c in sorted(scored)[:k]])
    return out


@pytest.mark.parametrize("mask_value,subtract", [(None, False), (-100.0, False), (-100.0, True)])
def test_topk_within_equals_brute_force_with_ties(mask_value, subtract):
    g = torch.Generator().manual_seed(7)
    query = torch.randint(-2, 3, (19, 4), generator=g).float()  # small integers: exact scores, many ties
    gallery = torch.randint(-2, 3, (40, 4), generator=g).float()
    candidates = [torch.randint(0, 40, (int(torch.randint(0, 25, (1,), generator=g)),), generator=g).tolist() for _ in range(19)]
    exclude = [c[:1] + [39] for c in candidates]  # some excluded entries are not candidates at all
    for budget in (16, 200, 10**6):  # groups of one query up to all queries
        values, indices = topk_within(query, gallery, candidates, 6, "mean", exclude, float("-inf") if mask_value is None else mask_value,
                                      "subtract" if subtract else "set", max_block_elements=budget)  # fmt: skip
        found = [[i for i in row if i >= 0] for row in indices.tolist()]
        assert found == brute_within(query, gallery, candidates, 6, exclude, mask_value, subtract)


def test_subtracted_masks_keep_their_order_in_the_full_ranking():
    query = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[0.5, 0.0], [0.9, 0.0], [0.7, 0.0], [0.1, 0.0]])
    _, shifted = topk_similarity(query, gallery, 4, "mean", [[0, 2]], mask_value=-100.0, mask_mode="subtract")
    _, set_ = topk_similarity(query, gallery, 4, "mean", [[0, 2]], mask_value=-100.0)
    assert shifted.tolist() == [[1, 3, 2, 0]]  # TF-CoVR's code: masked entries 100 below their scores, in score order
    assert set_.tolist() == [[1, 3, 0, 2]]  # CoVR's: masked entries tie at -100, lower index first


def test_new_metrics_by_hand():
    ranked = [["a", "b", "a", "c"], ["c", "d", "e", "f"]]
    assert M.count_at_k(ranked, ["a", "f"], 3) == pytest.approx(100.0 * (2 + 0) / 2)
    assert M.count_at_k(ranked, ["a", "f"], 4) == pytest.approx(100.0 * (2 + 1) / 2)
    assert M.recall_any_at_k(ranked, [{"x", "b"}, {"f"}], 2) == pytest.approx(50.0)
    # repeats: rel = 1, 0, 1, 0 -> P@1 = 1, P@3 = 2/3; |G| = 3 as listed (one repeated) -> (1 + 2/3) / 3
    assert M.average_precision_at_k(ranked[0], ["a", "z", "z"], 4, repeats=True) == pytest.approx((1 + 2 / 3) / 3)
    assert M.average_precision_at_k(["a", "a"], ["a"], 2, repeats=True) == pytest.approx(2.0)  # above 1 with repeats
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        M.average_precision_at_k(ranked[0], ["a"], 4)


def test_chance_equals_enumerating_every_ranking():
    for candidates, correct, k in [(5, 1, 2), (6, 2, 3), (4, 3, 1), (5, 2, 7)]:
        orders = list(itertools.permutations(range(candidates)))
        hits = sum(any(c < correct for c in order[:k]) for order in orders) / len(orders)
        counted = sum(sum(c < correct for c in order[:k]) for order in orders) / len(orders)
        assert expected_recall(candidates, correct, k, counted=False) == pytest.approx(hits)
        assert expected_recall(candidates, correct, k, counted=True) == pytest.approx(counted)
    assert expected_recall(0, 0, 5, False) == 0.0 and math.isclose(expected_recall(10, 1, 3, False), 0.3)


def test_text_rules_and_clip_names_by_hand():
    assert numbers_to_words("Do 2.5 turns, not 1; 0.5 or 7.0 or 10 or 3.25") == "Do two and a half turns, not one; half or seven or 10 or 3.25"
    assert tf_covr_clean('  A "twist" (1.5)!  Then: land.\t') == "a twist 1.5 then land.\t"
    assert tf_covr_clean(" ".join(f"w{i}" for i in range(40)), 30) == " ".join(f"w{i}" for i in range(30))
    assert clip_span("1e3e8a5c-aaaa-4bbb-8ccc-0123456789ab_243-2_251-25") == (243.2, 251.25)
    assert clip_span("1e3e8a5c-aaaa-4bbb-8ccc-0123456789ab_971_980") == (971.0, 980.0)
    assert [narration(t) for t in ("#C C opens the door", "#c c cuts", "# C C eats", "#O man walks", "no tag")] == [
        "C opens the door", "c cuts", "C eats", "man walks", "no tag",
    ]  # fmt: skip


def test_gallery_cache_encodes_each_item_once_across_galleries(tmp_path):
    rng = np.random.default_rng(0)
    paths = {f"v{i}": tmp_path / f"v{i}.mp4" for i in range(6)}
    for path in paths.values():
        clip_video(path, rng, frames=3)
    retriever = ColourRetriever()
    frames = FrameOptions(retriever.image_size, 2, "uniform", 4, 0)
    key = {"identity": retriever.identity, "level": "mean"}

    def gallery(ids):
        return cached_gallery(retriever, ids, [paths[i] for i in ids], frames, "mean", False, torch.device("cpu"), torch.float32, tmp_path / "c", key)

    first = gallery(["v0", "v1", "v2", "v3"])
    assert first.cache == "miss" and retriever.calls["target"] == 4
    second = gallery(["v3", "v4", "v1", "v5"])  # another benchmark: two known videos, two new ones
    assert second.cache == "partial (2 of 4 encoded)" and retriever.calls["target"] == 6
    fresh = ColourRetriever()
    direct = cached_gallery(fresh, second.ids, [paths[i] for i in second.ids], frames, "mean", False, torch.device("cpu"), torch.float32, None, key)
    assert second.ids == ["v3", "v4", "v1", "v5"] and torch.equal(second.embeddings, direct.embeddings)  # gallery order
    third = gallery(["v5", "v0"])
    assert third.cache == "hit" and retriever.calls["target"] == 6
    clip_video(paths["v0"], rng, frames=4)  # a replaced file is encoded again
    assert gallery(["v5", "v0"]).cache == "partial (1 of 2 encoded)"


def test_bad_video_annotations_name_the_file_row_and_field(tmp_path):
    from layouts_video import make_egocvr, make_tf_covr, write_csv

    from covr.data.errors import AnnotationError
    from covr.eval.datasets import load_benchmark

    make_egocvr(tmp_path / "ego")
    gallery_file = tmp_path / "ego/annotation/egocvr/egocvr_annotations_gallery.csv"
    text = gallery_file.read_text()
    gallery_file.rename(gallery_file.with_name("egocvr_annotations.csv"))
    with pytest.raises(AnnotationError, match="egocvr_annotations_gallery.csv: not found; the gallery lists are a separate download"):
        load_benchmark("egocvr", {"root": tmp_path / "ego"})
    gallery_file.write_text(text.replace("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]", "[0, 99]", 1))
    with pytest.raises(AnnotationError, match=r"egocvr_annotations_gallery.csv: row 2: global_idx position\(s\) \[99\] outside egocvr_data.csv's 15 rows"):
        load_benchmark("egocvr", {"root": tmp_path / "ego"})
    gallery_file.write_text(text.replace("_0_2']", "_0_3']", 1))
    with pytest.raises(AnnotationError, match=r"csv: row \d: target clip\(s\) \['.*_0_3'\] are not rows of egocvr_data.csv"):
        load_benchmark("egocvr", {"root": tmp_path / "ego"})
    make_tf_covr(tmp_path / "tf")
    rows = [{"query_video": "a", "target_video": "b", "target_videos_ids": "b, c", "modification": "x"}]
    write_csv(tmp_path / "tf/annotations/test_finegd.csv", list(rows[0]), rows)
    with pytest.raises(AnnotationError, match="test_finegd.csv: row 2: target_videos_ids is not a list literal"):
        load_benchmark("tf_covr", {"root": tmp_path / "tf"})
    with pytest.raises(AnnotationError, match="parquet is not read"):
        load_benchmark("tf_covr", {"root": tmp_path / "tf", "annotation": tmp_path / "tf/test.parquet"})
