"""Cutting plain text into sentence-sized segments for the local summarizer.

Prose is split at sentence punctuation, minding abbreviations ("Mr.",
"Inc.", "U.S."), initials and decimals. Text without punctuation (bullet
lists, headings, one endless line) falls back to lines, then clauses, then
word-bounded pieces, so every segment stays short enough to compare.
Only the first ``limit`` segments are produced: a huge input costs no more
than a long one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from durabatch.models.local_lexicon import stopwords


def _words(text: str) -> frozenset[str]:
    """A word list written as one string, as a set."""
    return frozenset(text.split())


MAX_SEGMENT_CHARS = 400
PIECE_CHARS = 300

# Never the end of a sentence: a title or a reference marker is followed by
# the thing it introduces.
_ALWAYS_ABBREV = _words(
    "mr mrs ms dr prof sr jr st mt gen gov sen rep col lt sgt capt rev hon "
    "fig figs no nos vol vols pp approx vs cf al ed eds dept"
)
# Often inside a sentence, sometimes its end: split only when the next word
# is one that typically opens a sentence ("... Acme Inc. The company ...").
_MAYBE_ABBREV = _words(
    "inc corp ltd co llc plc bros etc jan feb mar apr jun jul aug sep sept oct nov dec"
)

_BOUNDARY = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
_LAST_WORD = re.compile(r"(\S+?)\.$")
_NEXT_WORD = re.compile(r"[\"'\u201c\u2018(\[]?([A-Za-z]+)")
_DOTTED = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]")
_BLOCKS = re.compile(r"\n[ \t]*\n+")
_BULLET = re.compile(r"^\s*(?:[-*+\u2022\u25aa\u25cf\u2013>]|\d{1,3}[.)]|[a-zA-Z][.)]|#{1,6})\s+")
_TERMINAL = re.compile(r"[.!?\u2026:;\"'\u201d\u2019)\]]$")
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*$")
_CLAUSE = re.compile(r"(?<=[;:,])\s+|\s+[\u2013\u2014-]\s+")


def segments(text: str, limit: int) -> list[str]:
    """The first ``limit`` sentence-sized segments of ``text``, in order."""
    found: list[str] = []
    for block in _BLOCKS.split(text):
        for unit in _units(block):
            for sentence in split_sentences(unit):
                found.extend(_shorten(sentence, limit - len(found)))
                if len(found) >= limit:
                    return found[:limit]
    return found


def _units(block: str) -> Iterator[str]:
    """Group a block's lines into prose paragraphs, list items and headings."""
    lines = [line.strip() for line in block.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return
    widest = max(len(line) for line in lines)
    # Wrapped prose has long lines or sentence ends; a list of short,
    # unpunctuated lines is a list even without bullet marks.
    prose = widest >= 50 or any(_SENTENCE_END.search(line) for line in lines)
    short = min(100, 0.6 * widest) if prose else widest + 1
    current: list[str] = []
    for line in lines:
        bullet = _BULLET.match(line)
        if bullet and current:
            yield " ".join(current)
            current = []
        current.append(line[bullet.end() :] if bullet else line)
        if len(line) < short and not _TERMINAL.search(line):
            yield " ".join(current)
            current = []
    if current:
        yield " ".join(current)


def split_sentences(text: str) -> list[str]:
    """Split one paragraph into sentences at real sentence ends."""
    text = " ".join(text.split())
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        if not _is_sentence_end(text, match):
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def _is_sentence_end(text: str, match: re.Match[str]) -> bool:
    punct = match.group().rstrip()
    if not punct.startswith(".") or punct.startswith(".."):
        return True
    window = text[max(0, match.start() - 30) : match.start() + 1]
    last = _LAST_WORD.search(window)
    if last is None:
        return True
    word = last.group(1).lstrip("\"'(\u201c\u2018[").lower()
    if word in _ALWAYS_ABBREV:
        return False
    if word in _MAYBE_ABBREV or _DOTTED.fullmatch(word):
        following = _NEXT_WORD.match(text, match.end())
        return following is not None and following.group(1).lower() in stopwords()
    return True


def _shorten(sentence: str, budget: int) -> list[str]:
    """Break an over-long segment at clauses, then at word boundaries."""
    if len(sentence) <= MAX_SEGMENT_CHARS:
        return [sentence]
    # Only ``budget`` pieces can still be used: never chop more text than that.
    sentence = sentence[: budget * MAX_SEGMENT_CHARS]
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for clause in _CLAUSE.split(sentence):
        parts = clause.split(" ") if len(clause) > PIECE_CHARS else [clause]
        for part in parts:
            part = part[:PIECE_CHARS]
            if current and size + 1 + len(part) > PIECE_CHARS:
                pieces.append(" ".join(current))
                current, size = [], 0
            current.append(part)
            size += len(part) + 1
    if current:
        pieces.append(" ".join(current))
    return pieces


def truncate_words(text: str, limit: int, ellipsis: str = "\u2026") -> str:
    """``text`` cut to at most ``limit`` characters, at a word boundary."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ellipsis)]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + ellipsis
