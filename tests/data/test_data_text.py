import math

import pytest

from covr.data.text import clean_text


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Make the Dog RED.", "make the dog red"),
        ('A "quoted" (thing)! #tag: x; y~z *', "a quoted thing tag x y z"),
        ("  many \t spaces\n\nand lines  ", "many spaces and lines"),
        ("keep, commas - and 'apostrophes'?", "keep, commas - and 'apostrophes'?"),
        ("...", ""),
        ("", ""),
    ],
)
def test_clean_text_cases(raw, expected):
    assert clean_text(raw) == expected


def test_clean_text_truncates_to_max_words():
    text = " ".join(f"w{i}" for i in range(50))
    assert clean_text(text).split() == [f"w{i}" for i in range(30)]
    assert clean_text(text, max_words=3) == "w0 w1 w2"


@pytest.mark.parametrize("value", [None, math.nan, float("nan"), 3, 2.5, ["a"]])
def test_clean_text_non_strings_give_empty(value):
    assert clean_text(value) == ""
