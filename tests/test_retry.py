"""The retry policy and the rate-limit gate, with an injected clock: nothing sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from faketime import FakeTime

from durabatch.errors import RetryableError
from durabatch.models.entities_json import parse_entities
from durabatch.models.retry import RateGate, RetryPolicy, parse_duration, retry_after


def policy(fake: FakeTime, **kwargs: float) -> RetryPolicy:
    return RetryPolicy(sleep=fake.sleep, clock=fake.clock, random=lambda: 0.5, **kwargs)  # type: ignore[arg-type]


def failing(errors: list[Exception], result: str = "ok"):  # type: ignore[no-untyped-def]
    seen: list[int] = []

    def attempt(n: int) -> str:
        seen.append(n)
        if errors:
            raise errors.pop(0)
        return result

    return attempt, seen


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    fake = FakeTime()
    attempt, seen = failing([RetryableError("500")] * 5)
    assert policy(fake, max_attempts=6, max_delay=5.0).call(attempt) == "ok"
    assert seen == [1, 2, 3, 4, 5, 6]
    assert fake.waits == [0.5, 1.0, 2.0, 2.5, 2.5]  # 0.5 x min(5, 1, 2, 4, 8, 16)


def test_the_servers_wait_wins_over_backoff_and_is_capped() -> None:
    fake = FakeTime()
    errors: list[Exception] = [RetryableError("429", 7.0), RetryableError("429", 500.0)]
    attempt, _ = failing(errors)
    policy(fake, max_delay=60.0).call(attempt)
    assert fake.waits == [7.0, 60.0]


def test_attempts_run_out_and_the_last_error_is_raised() -> None:
    fake = FakeTime()
    attempt, seen = failing([RetryableError(f"503 #{i}") for i in range(10)])
    with pytest.raises(RetryableError, match="503 #2"):
        policy(fake, max_attempts=3).call(attempt)
    assert seen == [1, 2, 3]


def test_total_time_runs_out_before_a_wait_that_would_exceed_it() -> None:
    fake = FakeTime()
    attempt, seen = failing([RetryableError("429", 20.0)] * 10)
    with pytest.raises(RetryableError):
        policy(fake, max_attempts=10, max_total_seconds=50.0).call(attempt)
    assert seen == [1, 2, 3] and fake.waits == [20.0, 20.0]


def test_other_errors_are_not_retried() -> None:
    fake = FakeTime()
    attempt, seen = failing([ValueError("permanent")])
    with pytest.raises(ValueError):
        policy(fake).call(attempt)
    assert seen == [1] and fake.waits == []


def test_retry_after_headers() -> None:
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    later = datetime.now(UTC) + timedelta(seconds=30)
    waited = retry_after({"retry-after": format_datetime(later, usegmt=True)})
    assert waited is not None and 25 < waited <= 30
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


def test_reset_durations() -> None:
    assert parse_duration("1s") == 1.0
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2.5") == 2.5
    assert parse_duration("") is None


def test_the_gate_holds_calls_until_an_exhausted_window_resets() -> None:
    fake = FakeTime()
    gate = RateGate(policy(fake))
    gate.wait()
    assert fake.waits == []
    gate.update({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"})
    gate.update({"x-ratelimit-remaining-tokens": "5000", "x-ratelimit-reset-tokens": "9s"})
    gate.wait()
    assert fake.waits == [2.0]
    gate.wait()
    assert fake.waits == [2.0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"entities": [{"text": "ACME", "type": "ORG"}]}', [("ACME", "ORG")]),
        ('```json\n{"entities": [{"text": "Paris", "type": "location"}]}\n```',
         [("Paris", "LOCATION")]),
        ('Here you go: {"entities": [{"text": "Ann", "type": "PER"}]} hope it helps',
         [("Ann", "PERSON")]),
        ('[{"text": "ACME", "type": "COMPANY"}, {"text": "", "type": "ORG"}, 7]',
         [("ACME", "ORG")]),
        ('{"entities": [{"text": "X", "type": "SPACESHIP"}]}', [("X", "OTHER")]),
        ('{"entities": []}', []),
    ],
)  # fmt: skip
def test_entities_replies_are_repaired_where_safe(
    content: str, expected: list[tuple[str, str]]
) -> None:
    found = parse_entities(content)
    assert found is not None
    assert [(e.text, e.type) for e in found] == expected


@pytest.mark.parametrize(
    "content", ['{"entities": [{"text": "ACME"', "not json", '{"people": []}', "42"]
)
def test_entities_replies_that_cannot_be_trusted_are_refused(content: str) -> None:
    assert parse_entities(content) is None


def test_the_budget_uses_the_wait_actually_slept() -> None:
    """Draws alternating 1.0 and 0.0: the stop check must see the same draw the wait
    uses, not draw its own (which let 31 s of waits through a 20 s budget)."""
    fake = FakeTime()
    drawn: list[float] = []

    def draw() -> float:
        drawn.append(1.0 - len(drawn) % 2)
        return drawn[-1]

    retry = RetryPolicy(max_attempts=6, max_total_seconds=20.0, base_delay=1.0,
                        sleep=fake.sleep, clock=fake.clock, random=draw)  # fmt: skip
    attempt, seen = failing([RetryableError("503")] * 10)
    with pytest.raises(RetryableError):
        retry.call(attempt)
    # 1 x 1, 0 x 2, 1 x 4, 0 x 8 = 5 s; the next, 1 x 16, would end at 21 s: stop
    assert fake.waits == [1.0, 0.0, 4.0, 0.0] and seen == [1, 2, 3, 4, 5]
    assert len(drawn) == 5  # one draw per wait (the fifth refused), none for the check


def test_the_budget_counts_the_attempts_time_and_no_wait_ends_past_it() -> None:
    fake = FakeTime()
    start = fake.now
    ends: list[float] = []

    def sleep(seconds: float) -> None:
        fake.sleep(seconds)
        ends.append(fake.now - start)

    def slow_attempt(n: int) -> str:
        fake.now += 5.0  # each attempt takes 5 s, e.g. a read timeout
        raise RetryableError("timed out")

    retry = RetryPolicy(max_attempts=10, max_total_seconds=20.0, base_delay=1.0,
                        sleep=sleep, clock=fake.clock, random=lambda: 1.0)  # fmt: skip
    with pytest.raises(RetryableError):
        retry.call(slow_attempt)
    # attempts end at 5, 11, 18 s; waits of 1 and 2 s fit, the next 4 s would end at 22 s
    assert fake.waits == [1.0, 2.0] and ends == [6.0, 13.0] and fake.now - start == 18.0
