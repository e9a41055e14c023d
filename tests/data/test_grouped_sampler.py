"""The grouped-by-reference batch sampler (ReCALL) keeps EpochSampler's contract (every position once
per epoch, the same order in every rank and resumed run, global batches dealt to the ranks, exact
mid-epoch skip) while keeping the rows of a reference together; corrective triplets join the data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from covr.data.annotations import read_webvid_covr_csv
from covr.data.errors import AnnotationError
from covr.data.grouped_sampler import ReferenceGroupedSampler, dataset_references, grouped_order
from covr.data.triplets import with_corrective_triplets
from covr.data.webvid_covr import WebVidCoVRDataset
from helpers_data import toy_data  # noqa: F401  (fixture)


def _runs(order: np.ndarray, references: np.ndarray) -> dict[int, int]:
    """Maximal stretches of one reference in the order, counted per reference."""
    runs: dict[int, int] = {}
    for i, position in enumerate(order):
        if i == 0 or references[order[i - 1]] != references[position]:
            runs[int(references[position])] = runs.get(int(references[position]), 0) + 1
    return runs


@pytest.mark.parametrize("group_size", [1, 3, 4])
def test_grouped_order_is_a_permutation_with_each_reference_in_few_stretches(group_size):
    references = np.random.default_rng(0).integers(0, 40, size=300)  # 40 references, ~7.5 rows each
    order = grouped_order(references, group_size, torch.Generator().manual_seed(1))
    assert sorted(order.tolist()) == list(range(300))
    counts = np.bincount(references)
    for reference, runs in _runs(order, references).items():  # chunks of <= group_size rows: at most ceil(n / g) stretches
        assert runs <= math.ceil(counts[reference] / group_size), reference
    if group_size > 1:  # and not trivially: most neighbours share their reference
        assert np.mean(references[order[1:]] == references[order[:-1]]) > 0.5
    again = grouped_order(references, group_size, torch.Generator().manual_seed(1))
    assert np.array_equal(order, again)


class _Positions:
    """A dataset of N positions (the sampler reads only its length and set_epoch)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def test_sampler_deals_global_batches_and_skips_exactly():
    references = np.random.default_rng(1).integers(0, 10, size=50)
    make = lambda rank: ReferenceGroupedSampler(_Positions(50), lambda epoch: references, 4, seed=7, num_replicas=2, rank=rank)  # noqa: E731
    ranks = [make(0), make(1)]
    for s in ranks:
        s.set_epoch(3)
    order = ranks[0].epoch_order()
    assert order == ranks[1].epoch_order() and order != make(0).epoch_order()  # same on every rank, new each epoch
    mine = [list(s) for s in ranks]
    assert mine[0] == order[0:50:2] and mine[1] == order[1:50:2]  # global batch i of B x 2 = order[2Bi : 2B(i + 1)]
    ranks[1].skip(6, epoch=3)
    assert list(ranks[1]) == mine[1][6:]
    ranks[1].skip(6, epoch=2)  # a skip recorded for another epoch leaves this one whole
    assert list(ranks[1]) == mine[1]


def test_dataset_references_follow_the_rows_of_each_epoch(toy_data, tmp_path):
    csv, videos = toy_data["train"], toy_data["video_root"]
    rows = WebVidCoVRDataset(csv, videos, "train", image_size=32, epoch_mode="all_triplets", report_dir=tmp_path)
    refs = dataset_references(rows)
    assert np.array_equal(refs(0), rows.annotations.reference[rows.rows])
    targets = WebVidCoVRDataset(csv, videos, "train", image_size=32, epoch_mode="unique_targets", report_dir=tmp_path)
    refs = dataset_references(targets)
    for epoch in (0, 1):
        expected = [targets.annotations.reference[targets.row_of(i, epoch)] for i in range(len(targets))]
        assert refs(epoch).tolist() == [int(r) for r in expected]
    sampler = ReferenceGroupedSampler(rows, dataset_references(rows), group_size=4, seed=0, num_replicas=1, rank=0)
    sampler.set_epoch(0)
    batch = [rows.annotations.reference_id(int(rows.rows[i])) for i in list(sampler)[:32]]
    assert len(set(batch)) <= 16  # 32 rows in chunks of 4 share references (a random batch of 32 would not)


def _triplets(path, lines):
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return path


def test_corrective_triplets_become_rows(toy_data, tmp_path):
    csv, videos = toy_data["train"], toy_data["video_root"]
    ann = read_webvid_covr_csv(csv)
    reference, other_target = ann.reference_id(0), ann.target_id(5)
    path = _triplets(tmp_path / "corrected.jsonl", [
        {"reference": reference, "edit": "make it a green square", "target": other_target, "verified": True, "answers": ["yes"]},
        {"reference": reference, "edit": "make it huge", "target": ann.target_id(7), "verified": False},
        "",
    ])  # fmt: skip
    merged = with_corrective_triplets(ann, path)
    assert len(merged) == len(ann) + 1 and merged.edit[len(ann)] == "make it a green square"
    new = len(ann)
    assert (merged.reference_id(new), merged.target_id(new)) == (reference, other_target)
    assert merged.caption(new, "target") == ann.caption(5, "target") and merged.scores[new] == ann.scores[5]
    assert merged.caption(new, "reference") == ann.caption(0, "reference")
    assert [merged.edit[i] for i in range(len(ann))] == [ann.edit[i] for i in range(len(ann))]
    dataset = WebVidCoVRDataset(csv, videos, "train", image_size=32, epoch_mode="all_triplets", report_dir=tmp_path, corrective_triplets=path)
    item = dataset[len(dataset) - 1]
    assert (item["index"], item["edit"], item["target_id"], item["reference_id"]) == (new, "make it a green square", other_target, reference)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 1: not valid JSON"),
        ({"reference": "x", "edit": "", "target": "y"}, "line 1: field 'edit' is missing"),
        ({"reference": "nowhere/0", "edit": "make it red", "target": "TARGET"}, "reference 'nowhere/0' is not a reference"),
    ],
)
def test_bad_corrective_triplets_fail_in_one_line(toy_data, tmp_path, line, message):
    ann = read_webvid_covr_csv(toy_data["train"])
    if isinstance(line, dict):
        line = {k: (ann.target_id(0) if v == "TARGET" else v) for k, v in line.items()}
    with pytest.raises(AnnotationError, match=message):
        with_corrective_triplets(ann, _triplets(tmp_path / "bad.jsonl", [line]))
