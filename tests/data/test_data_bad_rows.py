"""Bad annotation rows in a large CSV are skipped, counted and listed, never a crash or silent
training: bytes that are not UTF-8, edits with no words, malformed or non-finite frame scores."""

from __future__ import annotations

import csv
import logging

import pytest
import torch
from helpers_data import broken_videos, triplet, write_csv  # noqa: F401 (fixture)

from covr.data.annotations import read_webvid_covr_csv, score_problem
from covr.data.errors import MissingVideosError
from covr.data.webvid_covr import WebVidCoVRDataset


@pytest.fixture
def bad_rows_csv(tmp_path, broken_videos):
    rows = [
        triplet("page/g0", "page/g1"),  # 0 fine
        triplet("page/g1", "page/g2", edit="make it LATIN1"),  # 1 a byte that is not UTF-8 (patched below)
        triplet("page/g2", "page/g3", edit=""),  # 2 empty edit
        triplet("page/g3", "page/g4", edit=" ... !"),  # 3 no words once cleaned
        triplet("page/g4", "page/g5", scores="[0.1, oops"),  # 4 malformed scores
        triplet("page/g5", "page/g0", scores="[0.2, nan, 0.3]"),  # 5 non-finite scores
        triplet("page/g0", "page/g2", scores="[0.2, inf]"),  # 6 non-finite scores
        triplet("page/g1", "page/g3", scores="[]"),  # 7 fine: an empty list means uniform weights
        triplet("page/g2", "page/g4", scores="[0.2, 0.5]"),  # 8 fine
    ]
    path = write_csv(tmp_path / "bad.csv", rows)
    path.write_bytes(path.read_bytes().replace(b"LATIN1", b"caf\xe9"))  # Latin-1 e-acute: invalid UTF-8
    return path


def test_bad_rows_are_skipped_listed_and_counted(bad_rows_csv, broken_videos, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        ds = WebVidCoVRDataset(bad_rows_csv, broken_videos["root"], "train", image_size=32, epoch_mode="all_triplets", report_dir=tmp_path)
    assert ds.rows.tolist() == [0, 7, 8]
    with open(tmp_path / "skipped_train.csv", newline="") as handle:
        listed = [(r["row"], r["field"], r["reason"]) for r in csv.DictReader(handle)]
    assert listed == [("1", "edit", "invalid utf-8"), ("2", "edit", "empty edit"), ("3", "edit", "empty edit"),
                      ("4", "scores", "bad scores"), ("5", "scores", "bad scores"), ("6", "scores", "bad scores")]  # fmt: skip
    assert "skipped 6 of 9 train rows: 3 bad scores, 2 empty edit, 1 invalid utf-8" in caplog.text
    assert f"{bad_rows_csv}: line 3 (row 1) has bytes that are not UTF-8 in edit" in caplog.text  # file and line named
    torch.testing.assert_close(ds[1]["target_weights"], torch.full((15,), 1 / 15))  # "[]": uniform, as CoVR


def test_the_test_split_refuses_bad_rows_unless_allowed(bad_rows_csv, broken_videos):
    with pytest.raises(MissingVideosError, match="6 of 9 test rows lack a usable video, embedding or text"):
        WebVidCoVRDataset(bad_rows_csv, broken_videos["root"], "test", image_size=32)
    ds = WebVidCoVRDataset(bad_rows_csv, broken_videos["root"], "test", image_size=32, allow_missing=True)
    assert ds.rows.tolist() == [0, 7, 8]


def test_reader_keeps_row_numbers_and_repairs_text_for_messages(bad_rows_csv):
    ann = read_webvid_covr_csv(bad_rows_csv)
    assert len(ann) == 9 and ann.edit[1] == "make it caf\ufffd" and ann.reference_id(8) == "page/g2"
    assert ann.bad_rows[1] == ("edit", "invalid utf-8")


@pytest.mark.parametrize("text, problem", [("", None), ("[]", None), ("[0.1, 0.2]", None), ("[1, 2,]", None), ("(0.5, 0.5)", None),
                                           ("[0.1, oops", "bad scores"), ("[nan]", "bad scores"), ("[0.1, -inf]", "bad scores"),
                                           ("{'a': 1}", "bad scores")])  # fmt: skip
def test_score_problems(text, problem):
    assert score_problem(text) == problem
