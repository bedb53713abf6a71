"""Deadlines against a real server on 127.0.0.1 that trickles its answer a byte at a time.

httpx's read timeout only bounds the gap between two bytes, so a reply sent one byte
at a time would never time out; the provider also bounds the whole answer by the read
timeout, counted from sending the request. Retry waits use a fake clock; the few real
durations are checked against bounds far from the trickle's total.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from fakeapi import FakeAPI, ok_summary
from faketime import FakeTime

from durabatch.errors import Cancelled
from durabatch.models.openai import OpenAIProvider
from durabatch.models.retry import RetryPolicy

MODEL = "gpt-5.4-mini"
Make = Callable[[float, RetryPolicy], OpenAIProvider]
TRICKLE = 0.03  # seconds per byte: a summary reply (about 300 bytes) takes about 9 s


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with FakeAPI() as server:
        yield server


@pytest.fixture
def make(api: FakeAPI) -> Iterator[Make]:
    """Providers on the fake server, closed after the test even when it fails."""
    made: list[OpenAIProvider] = []

    def build(read_timeout: float, policy: RetryPolicy) -> OpenAIProvider:
        made.append(OpenAIProvider(base_url=api.base_url, api_key="sk-test", policy=policy,
                                   read_timeout=read_timeout, connect_timeout=1.0))  # fmt: skip
        return made[-1]

    yield build
    for provider in made:
        provider.close()


def test_a_trickled_reply_is_cut_at_the_read_timeout_and_retried(api: FakeAPI, make: Make) -> None:
    slow = ok_summary("too slow", trickle=TRICKLE)
    assert len(slow.encoded()[0]) * TRICKLE > 8  # the whole trickle would take over 8 s
    api.script(slow, ok_summary("fine"))
    fake = FakeTime()
    model = make(0.5, RetryPolicy(sleep=fake.sleep, clock=fake.clock))
    started = time.monotonic()
    reply = model.summarize("text", MODEL)
    assert time.monotonic() - started < 4  # a fraction of the trickle's 9 s
    assert reply.value == "fine"
    cut, ok = reply.calls
    assert cut.http_status is None and cut.error_class == "ReadTimeout"
    assert cut.latency_ms < 4000 and "0.5s after the request was sent" in (cut.error or "")
    assert ok.ok and len(fake.waits) == 1 and len(api.completions()) == 2


def test_a_slow_reply_complete_within_the_read_timeout_is_kept(api: FakeAPI, make: Make) -> None:
    api.script(ok_summary("slow but in time", trickle=0.002))  # about 0.6 s in all
    fake = FakeTime()
    model = make(10.0, RetryPolicy(sleep=fake.sleep, clock=fake.clock))
    reply = model.summarize("text", MODEL)
    assert reply.value == "slow but in time" and len(reply.calls) == 1 and fake.waits == []


def test_a_drain_does_not_retry_a_trickle_cut_at_the_deadline(api: FakeAPI, make: Make) -> None:
    stopping = threading.Event()
    stopping.set()  # the drain began while the first attempt was in flight
    fake = FakeTime()
    policy = RetryPolicy(sleep=fake.sleep, clock=fake.clock, cancelled=stopping.is_set)
    api.script(ok_summary("too slow", trickle=TRICKLE), ok_summary("never asked"))
    model = make(0.5, policy)
    started = time.monotonic()
    with pytest.raises(Cancelled) as cancelled:
        model.summarize("text", MODEL)
    assert time.monotonic() - started < 4
    [cut] = cancelled.value.calls
    assert cut.error_class == "ReadTimeout" and len(api.completions()) == 1
