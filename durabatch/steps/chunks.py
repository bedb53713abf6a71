"""Split long text to fit a model's window, and map a call over the pieces.

Each piece's answer is checkpointed before the next call, so a crash inside
a long document costs one call, not all of them; a resumed step starts from
the pieces already stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from durabatch.models.base import CallRecord, Reply
from durabatch.steps.context import StepContext
from durabatch.store.records import Work

T = TypeVar("T")
CHARS_PER_TOKEN = 4
# leave a quarter of the window for the prompt and the answer
WINDOW_SHARE = 0.75


def chunk_chars(ctx: StepContext, model: str) -> int:
    tokens = ctx.settings.chunk_tokens or ctx.provider.window_tokens(model)
    return max(200, int(tokens * CHARS_PER_TOKEN * WINDOW_SHARE))


def split_text(text: str, limit: int) -> list[str]:
    """Pieces of at most ``limit`` characters, cut at paragraph, line or word breaks."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = _cut_point(rest, limit)
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return pieces


def _cut_point(text: str, limit: int) -> int:
    for separator in ("\n\n", "\n", ". ", " "):
        at = text.rfind(separator, limit // 2, limit)
        if at > 0:
            return at + len(separator)
    return limit


def map_chunks(
    work: Work, ctx: StepContext, pieces: list[str], call: Callable[[str], Reply[T]]
) -> tuple[list[T], list[CallRecord]]:
    """Call the model on each piece not yet stored; checkpoint each when there are several."""
    results: list[T] = list(work.partials)
    calls: list[CallRecord] = []
    for index in range(len(results), len(pieces)):
        reply = call(pieces[index])
        if len(pieces) > 1:
            ctx.checkpoint(index, reply.value, reply.calls)
        else:
            calls.extend(reply.calls)
        results.append(reply.value)
    return results, calls
