"""Word lists shipped with the local engine, read once from package data."""

from __future__ import annotations

from functools import cache
from importlib import resources


def _read_list(name: str) -> tuple[str, ...]:
    text = resources.files("durabatch").joinpath("data", name).read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


@cache
def stopwords() -> frozenset[str]:
    """Lowercase English function words and sentence openers."""
    return frozenset(_read_list("stopwords.txt"))


@cache
def given_names() -> frozenset[str]:
    """Common given names, lowercased for case-insensitive lookup."""
    return frozenset(name.lower() for name in _read_list("given_names.txt"))


@cache
def places() -> frozenset[str]:
    """Countries, US states, regions and major cities, as written."""
    return frozenset(_read_list("places.txt"))


@cache
def known_orgs() -> frozenset[str]:
    """Organisations commonly written without a legal suffix, as written."""
    return frozenset(_read_list("orgs.txt"))
