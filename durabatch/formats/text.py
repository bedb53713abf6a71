"""Plain text documents, and the whitespace rules every format shares.

Extracted text has one shape whatever it came from: lines without leading,
trailing or repeated spaces, paragraphs separated by exactly one blank line,
no invisible characters, nothing before the first word or after the last.
"""

from __future__ import annotations

import re

from durabatch.formats.decode import decode_bytes

_LINE_BREAKS = str.maketrans({"\r": "\n", "\v": "\n", "\x85": "\n", "\u2028": "\n"})
_PARAGRAPH_BREAKS = str.maketrans({"\f": "\n\n", "\u2029": "\n\n"})
# Soft hyphen, zero-width space, word joiner and a stray BOM: invisible when rendered.
_INVISIBLE = str.maketrans(dict.fromkeys("\u00ad\u200b\u2060\ufeff"))
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_HORIZONTAL_SPACE = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize(text: str) -> str:
    """Apply the shared whitespace rules to already-extracted text."""
    text = text.replace("\r\n", "\n").translate(_LINE_BREAKS).translate(_PARAGRAPH_BREAKS)
    text = _CONTROLS.sub("", text.translate(_INVISIBLE))
    lines = (_HORIZONTAL_SPACE.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def extract_plain(data: bytes) -> str:
    """Text of a ``.txt``-like file: decoded, with whitespace normalised."""
    return normalize(decode_bytes(data))
