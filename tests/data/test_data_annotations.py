import numpy as np
import pytest
from helpers_data import triplet, write_csv

from covr.data.annotations import parse_scores, read_webvid_covr_csv
from covr.data.errors import AnnotationError


def test_reads_official_columns(tmp_path):
    rows = [triplet("p/a", "p/b", "Make it RED.", "[0.1, 0.2]"), triplet("p/b", "p/a", "swap", "")]
    ann = read_webvid_covr_csv(write_csv(tmp_path / "x.csv", rows))
    assert len(ann) == 2
    assert (ann.reference_id(0), ann.target_id(0), ann.reference_id(1)) == ("p/a", "p/b", "p/b")
    assert ann.video_ids == ["p/a", "p/b"] and ann.reference.dtype == np.int32
    assert ann.edit[0] == "Make it RED." and ann.caption(1, "target") == "Caption of p/a!"
    assert ann.scores[0] == "[0.1, 0.2]" and ann.scores[1] == ""


def test_optional_columns_may_be_absent(tmp_path):
    ann = read_webvid_covr_csv(write_csv(tmp_path / "x.csv", [triplet("a", "b")], columns=("edit", "pth2", "pth1")))
    assert ann.caption(0, "reference") == "" and ann.scores is None and ann.target_id(0) == "b"


def test_missing_required_column_names_file_and_column(tmp_path):
    path = write_csv(tmp_path / "bad.csv", [triplet("a", "b")], columns=("pth1", "txt1", "edit"))
    with pytest.raises(AnnotationError, match=r"bad\.csv.*missing required column\(s\) pth2"):
        read_webvid_covr_csv(path)


def test_bad_rows_name_row_and_field(tmp_path):
    path = write_csv(tmp_path / "x.csv", [triplet("a", "b"), triplet("", "b")])
    with pytest.raises(AnnotationError, match=r"x\.csv: row 1 \(line 3\) has an empty pth1"):
        read_webvid_covr_csv(path)
    short = tmp_path / "short.csv"
    short.write_text("pth1,pth2,edit\na,b,c\nd,e\n")
    with pytest.raises(AnnotationError, match=r"short\.csv: row 1 \(line 3\) has 2 fields"):
        read_webvid_covr_csv(short)
    with pytest.raises(AnnotationError, match="does not exist"):
        read_webvid_covr_csv(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[0.31, 0.29, 0.5]", [0.31, 0.29, 0.5]),
        ("[1, 2]", [1.0, 2.0]),
        ("(0.1, 0.2)", [0.1, 0.2]),
        ("[0.1, 0.2,]", [0.1, 0.2]),
        ("", None),
        ("[]", None),
        ("[0.1, nan]", None),
        ("[0.1, 'x']", None),
        ("__import__('os')", None),
        ("[0.1, 0.2", None),
        (None, None),
    ],
)
def test_parse_scores(text, expected):
    got = parse_scores(text)
    if expected is None:
        assert got is None
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-6)
