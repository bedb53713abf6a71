"""What a provider tells the engine before each paid attempt.

The engine sets a guard for the step a worker thread is running (a context
variable, so each thread has its own); the provider calls ``before_paid_call``
with what it is about to send. The guard writes the call down in the store
before it is made (so a call cut off by a crash is still known, and counted as
waste), and under ``--max-cost`` also holds its worst case, or raises
``BudgetReached`` (the run pauses) or ``HaltError`` (a price is unknown, so the
call would be made blind). The local engine is free and has no guard.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from durabatch.tokens import approx_tokens


@dataclass(frozen=True)
class PaidCall:
    engine: str
    host: str | None
    model: str
    input_tokens: int  # estimated from the prompt
    most_input_tokens: int  # an upper bound: one token per byte
    max_output_tokens: int


@dataclass(frozen=True)
class Guard:
    note: Callable[[PaidCall], None]
    limited: bool  # under --max-cost: the answer needs a bound (max_tokens)


current: ContextVar[Guard | None] = ContextVar("durabatch_budget_guard", default=None)


def budgeted() -> bool:
    guard = current.get()
    return guard is not None and guard.limited


def before_paid_call(engine: str, host: str | None, model: str, prompt: str,
                     most_input_tokens: int, max_output_tokens: int) -> None:  # fmt: skip
    guard = current.get()
    if guard is not None:
        call = PaidCall(engine, host, model, approx_tokens(prompt), most_input_tokens,
                        max_output_tokens)  # fmt: skip
        guard.note(call)
