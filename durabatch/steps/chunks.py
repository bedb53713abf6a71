"""Split long text to fit a model's window, and map a call over the pieces.

Each piece's answer is checkpointed before the next call, so a crash inside
a long document costs one call, not all of them; a resumed step starts from
the pieces already stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from durabatch.config import Settings
from durabatch.errors import Cancelled, DocumentError, DurabatchError, Reason
from durabatch.models.base import CallRecord, Provider, Reply
from durabatch.steps.context import StepContext
from durabatch.store.records import Work
from durabatch.tokens import CHARS_PER_TOKEN

T = TypeVar("T")
# leave a quarter of the window for the prompt and the answer
WINDOW_SHARE = 0.75


def chunk_chars(ctx: StepContext, model: str) -> int:
    return piece_chars(ctx.settings, ctx.provider, model)


def piece_chars(settings: Settings, provider: Provider, model: str) -> int:
    """The longest piece of text one call of ``model`` carries."""
    tokens = settings.max_input_tokens or provider.window_tokens(model)
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
    work: Work,
    ctx: StepContext,
    pieces: list[str],
    call: Callable[[str], Reply[T]],
    merge: Callable[[list[T]], T],
) -> tuple[list[T], list[CallRecord]]:
    """Call the model on each piece not yet stored; checkpoint each when there are several."""
    results: list[T] = list(work.partials)
    calls: list[CallRecord] = []
    for index in range(len(results), len(pieces)):
        reply = _fitting(pieces[index], call, merge)
        if len(pieces) > 1:
            ctx.checkpoint(index, reply.value, reply.calls)
        else:
            calls.extend(reply.calls)
        results.append(reply.value)
    return results, calls


def _fitting(
    piece: str, call: Callable[[str], Reply[T]], merge: Callable[[list[T]], T]
) -> Reply[T]:
    """A piece the model says is too long is split in two once; still too long fails."""
    try:
        return call(piece)
    except DocumentError as exc:
        if exc.reason != Reason.CONTEXT_LENGTH:
            raise
        spent = list(exc.calls)
    values: list[T] = []
    for half in split_text(piece, len(piece) // 2 + 1):
        try:
            reply = call(half)
        except DocumentError as again:
            if again.reason == Reason.CONTEXT_LENGTH:
                message = f"{again.message} (even after splitting the piece in two)"
                raise DocumentError(again.reason, message, spent + list(again.calls)) from again
            again.calls = (*spent, *again.calls)
            raise
        except (DurabatchError, Cancelled) as again:  # a pause or halt keeps what was spent
            again.calls = (*spent, *again.calls)
            raise
        spent += reply.calls
        values.append(reply.value)
    return Reply(merge(values), tuple(spent))
