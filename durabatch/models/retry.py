"""The one retry policy for model calls, and the gate that honours rate-limit headers.

Only ``RetryableError`` is retried: 429 (but not ``insufficient_quota``), 5xx,
timeouts, refused or dropped connections, a body cut off mid-stream. The wait
is the server's ``Retry-After`` / ``retry-after-ms`` when it sent one (capped
at ``max_delay``), else exponential backoff with full jitter. Attempts and
total time are both bounded (the time counts the attempts and the waits, and
no wait starts that would end past it); when either runs out the last error
is raised and the caller pauses the run. Sleep, clock and randomness are injected, so
tests never wait.
"""

from __future__ import annotations

import random as _random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type

from durabatch.errors import RetryableError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    max_total_seconds: float = 300.0
    base_delay: float = 1.0
    max_delay: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    random: Callable[[], float] = field(default=_random.random, repr=False)
    cancelled: Callable[[], bool] = field(default=lambda: False, repr=False)

    def wait_for(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return max(0.0, min(error.retry_after, self.max_delay))
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (state.attempt_number - 1))
        return float(self.random() * ceiling)

    def call(self, attempt: Callable[[int], T]) -> T:
        """``attempt(n)`` until it returns; the last RetryableError when the budget is spent."""
        start = self.clock()

        def give_up(state: RetryCallState) -> bool:
            if self.cancelled() or state.attempt_number >= self.max_attempts:
                return True
            # the wait tenacity drew and will sleep (not a fresh draw), after the time
            # the attempts and the earlier waits took: no wait may end past the budget
            return self.clock() - start + state.upcoming_sleep > self.max_total_seconds

        retrying = Retrying(
            sleep=self.sleep,
            stop=give_up,
            wait=self.wait_for,
            retry=retry_if_exception_type(RetryableError),
            reraise=True,
        )
        for trying in retrying:
            with trying:
                return attempt(trying.retry_state.attempt_number)
        raise AssertionError("tenacity either returns or raises")  # pragma: no cover


def retry_after(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, or ``Retry-After``
    as seconds or an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now())
    except (TypeError, ValueError):
        return None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations: ``1s``, ``6m0s``, ``250ms``, or plain seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    return sum(float(n) * _UNIT[unit] for n, unit in parts) if parts else None


class RateGate:
    """Shared by every call of a provider: when the server says a rate-limit window is
    used up (``x-ratelimit-remaining-* == 0``), nobody sends until it resets."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._not_before = 0.0

    def wait(self) -> None:
        with self._lock:
            pause = self._not_before - self.policy.clock()
        if pause > 0:
            self.policy.sleep(min(pause, self.policy.max_delay))

    def update(self, headers: Mapping[str, str]) -> None:
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
            if remaining is not None and remaining.strip() == "0" and reset:
                with self._lock:
                    until = self.policy.clock() + min(reset, self.policy.max_delay)
                    self._not_before = max(self._not_before, until)
