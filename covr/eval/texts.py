"""Query-text cleaning rules a benchmark's published code applies, by name.

  pre_caption  CoVR / BLIP's rule (covr.data.text.clean_text, what training uses): lower case,
               `.!"()*#:;~` replaced by spaces, whitespace collapsed, at most max_words words
  tf_covr      TF-CoVR's variant: the same, but `.` is kept ("2.5" survives), and only runs of two
               or more whitespace characters are collapsed

`numbers_to_words` is TF-CoVR's second step, applied before cleaning: 0.5 -> "half", 1 -> "one",
1.5 -> "one and a half", ... 7 -> "seven"; other numbers stay as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from covr.data.text import clean_text

_TF_COVR_PUNCTUATION = re.compile(r"[!\"()*#:;~]")
_TWO_OR_MORE_SPACES = re.compile(r"\s{2,}")
_NUMBER = re.compile(r"\b\d+(\.\d+)?\b")
_UNITS = ("", "one", "two", "three", "four", "five", "six", "seven")
NUMBER_WORDS = {i / 2: (f"{_UNITS[i // 2]} and a half" if i % 2 and i > 1 else "half" if i == 1 else _UNITS[i // 2]) for i in range(1, 15)}


def tf_covr_clean(text: object, max_words: int | None = 30) -> str:
    """TF-CoVR's pre_caption (see the module docstring); non-strings give ""."""
    if not isinstance(text, str):
        return ""
    text = _TWO_OR_MORE_SPACES.sub(" ", _TF_COVR_PUNCTUATION.sub(" ", text.lower()))
    text = text.rstrip("\n").strip(" ")
    words = text.split(" ")
    if max_words is not None and max_words >= 0 and len(words) > max_words:
        text = " ".join(words[:max_words])
    return text


def numbers_to_words(text: str) -> str:
    """Replace each number TF-CoVR maps (0.5 ... 7 in halves, "2" and "2.0" alike) by its words."""

    def replace(match: re.Match) -> str:
        return NUMBER_WORDS.get(float(match.group(0)), match.group(0))

    return _NUMBER.sub(replace, text)


TEXT_RULES: dict[str, Callable[[object, int | None], str]] = {"pre_caption": clean_text, "tf_covr": tf_covr_clean}


def cleaner(rule: str) -> Callable[[object, int | None], str]:
    """The cleaning function of a rule name (one-line error for an unknown one)."""
    if rule not in TEXT_RULES:
        raise ValueError(f"unknown text cleaning rule {rule!r}; expected one of {', '.join(TEXT_RULES)}")
    return TEXT_RULES[rule]


def word_count(rule: str, text: object) -> int:
    """Words of `text` after cleaning without a word limit (to report how many texts a limit cuts)."""
    cleaned = cleaner(rule)(text, None)
    return len(cleaned.split()) if cleaned else 0
