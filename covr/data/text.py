"""Caption / modification-text normalisation (BLIP's ``pre_caption`` rules)."""

from __future__ import annotations

import math
import re

# BLIP's pre_caption replaces exactly these characters with a space.
_PUNCTUATION = re.compile(r"[.!\"()*#:;~]")
_WHITESPACE = re.compile(r"\s+")


def clean_text(text: object, max_words: int = 30) -> str:
    """Lower-case, replace ``. ! " ( ) * # : ; ~`` by spaces, collapse whitespace, keep <= max_words words.

    Empty, NaN, None and other non-string values give "".
    """
    if not isinstance(text, str):
        return ""  # None, NaN (float), numbers from a badly typed column
    text = _PUNCTUATION.sub(" ", text.lower())
    words = _WHITESPACE.sub(" ", text).strip().split(" ")
    if max_words is not None and max_words >= 0:
        words = words[:max_words]
    return " ".join(words).strip()


def is_missing(value: object) -> bool:
    """True for None, NaN and empty / whitespace-only strings (optional CSV cells)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()
