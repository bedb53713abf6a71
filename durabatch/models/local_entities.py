"""Rule-based named entities for the local engine.

MONEY and DATE come from regular expressions (``local_patterns``); their
spans are then blanked out, and the remaining runs of capitalised words are
read by ``local_names``. Entities are deduplicated (same text and type once)
and kept in order of first occurrence. Long texts are read in windows and
reading stops at ``MAX_ENTITIES``, so a huge input costs little more than
the part of it that filled the list.
"""

from __future__ import annotations

from durabatch.models.base import Entity
from durabatch.models.local_names import RUN, Found, read_run
from durabatch.models.local_patterns import find_spans

MAX_ENTITIES = 200
WINDOW_CHARS = 20_000
_MASK = "\x00"


def extract_entities(text: str) -> list[Entity]:
    """Entities of ``text`` in order of first occurrence, at most ``MAX_ENTITIES``."""
    seen: set[tuple[str, str]] = set()
    entities: list[Entity] = []
    persons: list[str] = []
    for window in _windows(text):
        for _, value, kind in _window_entities(window):
            key = (value.rstrip(".").casefold(), kind)
            if key in seen or _refers_back(value, kind, persons):
                continue
            seen.add(key)
            entities.append(Entity(value, kind))
            if kind == "PERSON":
                persons.append(value)
            if len(entities) == MAX_ENTITIES:
                return entities
    return entities


def _window_entities(window: str) -> list[Found]:
    found: list[Found] = []
    masked = list(window)
    for start, end, value, kind in find_spans(window):
        found.append((start, " ".join(value.split()), kind))
        masked[start:end] = _MASK * (end - start)
    blanked = "".join(masked)
    for run in RUN.finditer(blanked):
        found.extend(read_run(run, blanked))
    found.sort(key=lambda item: item[0])
    return found


def _refers_back(value: str, kind: str, persons: list[str]) -> bool:
    """ "Mr. Doe" after "Jane Doe" is the same person, not a new entity."""
    if kind != "PERSON" or " " in value:
        return False
    return any(person.split()[-1] == value for person in persons)


def _windows(text: str) -> list[str]:
    """``text`` cut into windows that end at a line break where possible."""
    windows: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + WINDOW_CHARS)
        if end < len(text):
            newline = text.rfind("\n", start + WINDOW_CHARS // 2, end)
            end = newline + 1 if newline != -1 else _space_before(text, start, end)
        windows.append(text[start:end])
        start = end
    return windows


def _space_before(text: str, start: int, end: int) -> int:
    space = text.rfind(" ", start + WINDOW_CHARS // 2, end)
    return space + 1 if space != -1 else end
