"""summarize: one summary per document; long text is summarized piece by piece."""

from __future__ import annotations

from durabatch.errors import Cancelled, DocumentError, DurabatchError
from durabatch.models.base import CallRecord
from durabatch.steps.chunks import chunk_chars, map_chunks, split_text
from durabatch.steps.context import StepContext
from durabatch.steps.extract import text_of
from durabatch.store.records import StepResult, Work


def run(work: Work, ctx: StepContext) -> StepResult:
    model = ctx.settings.model_for("summarize")
    limit = chunk_chars(ctx, model)
    text = text_of(work, ctx)
    partials, calls = map_chunks(
        work, ctx, split_text(text, limit), lambda piece: ctx.provider.summarize(piece, model),
        " ".join,
    )  # fmt: skip
    summary, more = _reduce(partials, ctx, model, limit)
    return StepResult(output=summary, calls=tuple(calls + more))


def _reduce(partials: list[str], ctx: StepContext, model: str,
            limit: int) -> tuple[str, list[CallRecord]]:  # fmt: skip
    """Summarize the partial summaries until one remains."""
    calls: list[CallRecord] = []
    while len(partials) > 1:
        pieces = split_text("\n\n".join(partials), limit)
        partials = []
        for piece in pieces:
            try:
                reply = ctx.provider.summarize(piece, model)
            except (DurabatchError, DocumentError, Cancelled) as stopped:
                stopped.calls = (*calls, *stopped.calls)  # earlier rounds were paid too
                raise
            calls.extend(reply.calls)
            partials.append(reply.value)
        if len(pieces) == 1:
            break
    return (partials[0] if partials else ""), calls
