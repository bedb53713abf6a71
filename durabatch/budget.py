"""The spending guard a provider consults before each paid attempt.

The engine sets a guard for the step a worker thread is running (a context
variable, so each thread has its own); the provider calls ``before_paid_call``
with what it is about to send. The guard reserves the call's worst case in the
store, or raises ``BudgetReached`` (the run pauses) or ``HaltError`` (a price
is unknown, so the call would be made blind). Without a budget nothing is set
and the call costs nothing to check.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

# guard(engine, host, model, input_tokens, max_output_tokens)
Guard = Callable[[str, str | None, str, int, int], None]
current: ContextVar[Guard | None] = ContextVar("durabatch_budget_guard", default=None)


def budgeted() -> bool:
    return current.get() is not None


def before_paid_call(engine: str, host: str | None, model: str, input_tokens: int,
                     max_output_tokens: int) -> None:  # fmt: skip
    guard = current.get()
    if guard is not None:
        guard(engine, host, model, input_tokens, max_output_tokens)
