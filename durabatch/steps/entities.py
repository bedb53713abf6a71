"""entities: typed named entities, merged across pieces, first occurrence first."""

from __future__ import annotations

from typing import Any

from durabatch.models.base import Reply
from durabatch.steps.chunks import chunk_chars, map_chunks, split_text
from durabatch.steps.context import StepContext
from durabatch.steps.extract import text_of
from durabatch.store.records import StepResult, Work


def run(work: Work, ctx: StepContext) -> StepResult:
    model = ctx.settings.model_for("entities")
    text = text_of(work, ctx)

    def call(piece: str) -> Reply[list[dict[str, str]]]:
        reply = ctx.provider.entities(piece, model)
        return Reply([entity.as_dict() for entity in reply.value], reply.calls)

    pieces = split_text(text, chunk_chars(ctx, model))
    found, calls = map_chunks(work, ctx, pieces, call, lambda lists: _merge(lists))
    return StepResult(output=_merge(found), calls=tuple(calls))


def _merge(lists: list[list[dict[str, str]]]) -> list[dict[str, Any]]:
    seen: set[tuple[str, str]] = set()
    merged = []
    for entities in lists:
        for entity in entities:
            key = (entity["text"], entity["type"])
            if key not in seen:
                seen.add(key)
                merged.append(entity)
    return merged
