"""summarize: one summary per document; long text is summarized piece by piece."""

from __future__ import annotations

from durabatch.errors import Cancelled, DocumentError, DurabatchError, Reason
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
    before = None  # how long the summaries were a round ago
    while len(partials) > 1:
        joined = "\n\n".join(partials)
        if before is not None and len(joined) >= before:  # no shorter: another round neither
            raise DocumentError(
                Reason.CONTEXT_LENGTH,
                f"the summaries of its {len(partials)} pieces do not fit in one call of "
                f"{limit} characters, and summarizing them again does not shorten them; "
                "raise --max-input-tokens in a new run (a run keeps the value it started with)",
                calls,
            )
        before, pieces, partials = len(joined), split_text(joined, limit), []
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
