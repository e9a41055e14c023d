"""read_jsonl: every reader of a user's JSONL file (annotations, constraints, captions, triplets)
fails on a bad line with one message naming the file and the line."""

from __future__ import annotations

import pytest

from covr.data.errors import AnnotationError
from covr.data.jsonl import read_jsonl


def test_objects_come_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": 1}\n\n  \n{"id": "x", "text": "caf\\u00e9"}\n', encoding="utf-8")
    assert read_jsonl(path) == [(1, {"id": 1}), (4, {"id": "x", "text": "café"})]


@pytest.mark.parametrize(
    "content, expected",
    [
        (b'{"id": 1}\n{"id": 2\n', r"line 2: not valid JSON"),
        (b'{"id": 1}\n[1, 2]\n', r"line 2: expected a JSON object"),
        (b'{"id": 1}\n{"id": 2}\n{"text": "\xff\xfe"}\n', r"line 3: not UTF-8 text"),
    ],
)
def test_a_bad_line_is_named(tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(AnnotationError, match=expected) as error:
        read_jsonl(path, "constraint file")
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_missing_file_is_named_with_what_it_is(tmp_path):
    with pytest.raises(AnnotationError, match=r"missing\.jsonl: caption file not found"):
        read_jsonl(tmp_path / "missing.jsonl", "caption file")
