"""Regular expressions for the local engine's MONEY and DATE entities.

Each pattern names the group that holds the entity's text: the whole match,
or a part of it when only the context makes it an entity ("in 2023" gives
the DATE "2023").
"""

from __future__ import annotations

import re

from durabatch.models.base import EntityType

MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_MONTH = rf"(?:{MONTHS}|(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?)"
WEEKDAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_WEEKDAY = rf"(?:{WEEKDAYS})"
_YEAR = r"(?:1[5-9]\d\d|20\d\d|21\d\d)"
_DAY = r"(?:3[01]|[12]\d|0?[1-9])(?:st|nd|rd|th)?"
_MM = r"(?:1[0-2]|0?[1-9])"
_DD = r"(?:3[01]|[12]\d|0?[1-9])"
_CONTEXT = re.compile(
    r"\b(?i:in|since|by|during|until|till|from|before|after|through|throughout|"
    r"early|late|mid|circa|around|year|last|next|this)[\s-]+$"
)

_FISCAL = r"[Ff]iscal(?:\s+[Yy]ear)?|FY|[Ff]inancial\s+[Yy]ear"

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_SCALE = r"(?:\s*(?:thousand|million|billion|trillion|mn|bn|tn)\b|[mbkMBK]\b)"
_CODES = r"USD|EUR|GBP|JPY|CNY|RMB|CHF|CAD|AUD|NZD|INR|HKD|SGD|SEK|NOK|DKK|KRW|BRL|MXN|ZAR|RUB"
_CURRENCY_WORDS = (
    r"dollars|euros|yen|yuan|renminbi|rupees|francs|pesos|roubles|rubles|cents|pence|"
    r"pounds\s+sterling"
)
_NATION = r"(?:(?:US|U\.S\.|American|Canadian|Australian|Hong\s+Kong|Singapore|New\s+Zealand)\s+)"

# (type, pattern, group holding the entity text; -1: group 1, if _CONTEXT precedes it)
_SPECS: tuple[tuple[EntityType, str, int], ...] = (
    ("MONEY", rf"(?:\b[A-Z]{{1,3}})?[$\u20ac\u00a3\u00a5\u20b9]\s?{_NUM}{_SCALE}?", 0),
    ("MONEY", rf"\b(?:{_CODES})\s?{_NUM}{_SCALE}?", 0),
    ("MONEY", rf"\b{_NUM}{_SCALE}?\s?(?:{_CODES})\b", 0),
    (
        "MONEY",
        rf"\b{_NUM}(?:\s+(?:thousand|million|billion|trillion))?\s+{_NATION}?(?:{_CURRENCY_WORDS})\b",
        0,
    ),
    ("MONEY", rf"\b{_NUM}\s+(?:thousand|million|billion|trillion)\s+pounds\b", 0),
    ("DATE", rf"\b(?:{_WEEKDAY},?\s+)?{_MONTH}\s+{_DAY}\b(?:,?\s+{_YEAR}\b)?", 0),
    ("DATE", rf"\b(?:{_WEEKDAY},?\s+)?{_DAY}\s+(?:of\s+)?{_MONTH}(?:,?\s+{_YEAR}\b)?", 0),
    ("DATE", rf"\b{_MONTH},?\s+{_YEAR}\b", 0),
    ("DATE", rf"\b{_YEAR}-(?:1[0-2]|0[1-9])-(?:3[01]|[12]\d|0[1-9])\b", 0),
    ("DATE", rf"\b{_DD}/{_MM}/(?:{_YEAR}|\d\d)\b|\b{_MM}/{_DD}/(?:{_YEAR}|\d\d)\b", 0),
    ("DATE", rf"\b{_DD}\.{_MM}\.{_YEAR}\b", 0),
    ("DATE", rf"\b(?:Q[1-4]|H[12])\s?(?:FY\s?)?(?:{_YEAR}|'?\d\d)\b", 0),
    ("DATE", rf"\b(?:first|second|third|fourth)\s+quarter\s+of\s+{_YEAR}\b", 0),
    (
        "DATE",
        rf"\b(?:[Ff]iscal(?:\s+[Yy]ear)?|FY|[Ff]inancial\s+[Yy]ear)\s?'?(?:{_YEAR}|\d\d)\b",
        0,
    ),
    ("DATE", rf"\b{_WEEKDAY}\b", 0),
    ("DATE", r"\b((?:19|20)\d0s)\b", 1),
    # Bare years and months need a word before them ("in 2023", "since May"):
    # checked after the match, which is much faster than a leading alternation.
    ("DATE", rf"\b({_YEAR})\b(?![-/.,]?\d|\s*%)", -1),
    ("DATE", rf"\b({MONTHS})\b", -1),
)

PATTERNS: tuple[tuple[EntityType, re.Pattern[str], int], ...] = tuple(
    (kind, re.compile(pattern), group) for kind, pattern, group in _SPECS
)


def find_spans(text: str) -> list[tuple[int, int, str, EntityType]]:
    """Non-overlapping MONEY and DATE spans: earliest first, then longest."""
    found: list[tuple[int, int, str, EntityType]] = []
    for kind, pattern, spec_group in PATTERNS:
        contextual = spec_group < 0
        group = abs(spec_group)
        for match in pattern.finditer(text):
            start = match.start(group)
            if contextual and not _CONTEXT.search(text, max(0, start - 16), start):
                continue
            found.append((start, match.end(group), match.group(group), kind))
    found.sort(key=lambda span: (span[0], -span[1]))
    kept: list[tuple[int, int, str, EntityType]] = []
    end = -1
    for span in found:
        if span[0] >= end:
            kept.append(span)
            end = span[1]
    return kept
