"""Read a model's entities reply: validate against the schema, repair what is safe.

Safe repairs: a code fence around the JSON, prose around one JSON object, a
bare list instead of ``{"entities": [...]}``, type names in another case or a
common synonym (``ORGANIZATION`` is ``ORG``), an unknown type (becomes
``OTHER``). Anything else is not JSON we can trust: the caller asks again.
"""

from __future__ import annotations

import json
from typing import Any

from durabatch.models.base import ENTITY_TYPES, Entity, EntityType

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entities": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "type": {"type": "string", "enum": list(ENTITY_TYPES)},
                },
                "required": ["text", "type"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["entities"],
    "additionalProperties": False,
}

SYNONYMS: dict[str, EntityType] = {
    "ORGANIZATION": "ORG", "ORGANISATION": "ORG", "COMPANY": "ORG", "PER": "PERSON",
    "PEOPLE": "PERSON", "LOC": "LOCATION", "PLACE": "LOCATION", "GPE": "LOCATION",
    "TIME": "DATE", "CURRENCY": "MONEY", "MISC": "OTHER",
}  # fmt: skip


def parse_entities(content: str) -> list[Entity] | None:
    """The entities in a reply, or None when it is not JSON of the expected shape."""
    data = _load(content)
    if isinstance(data, dict):
        data = data.get("entities")
    if not isinstance(data, list):
        return None
    found: list[Entity] = []
    for item in data:
        if isinstance(item, dict) and isinstance(item.get("text"), str) and item["text"].strip():
            found.append(Entity(item["text"].strip(), _type(item.get("type"))))
    return found


def _load(content: str) -> Any:
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            return json.loads(text[start : end + 1])
        except ValueError:
            return None
    return None


def _type(value: object) -> EntityType:
    name = str(value or "").strip().upper()
    for known in ENTITY_TYPES:
        if name == known:
            return known
    return SYNONYMS.get(name, "OTHER")
