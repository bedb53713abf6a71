"""Token counts without a tokenizer (nothing is downloaded): an estimate, and a bound."""

from __future__ import annotations

import math

CHARS_PER_TOKEN = 4


def approx_tokens(text: str) -> int:
    """About four ASCII characters per token, one token per other character."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / CHARS_PER_TOKEN + (len(text) - ascii_chars))
