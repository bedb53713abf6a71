"""The OpenAI-compatible provider against a real HTTP server on 127.0.0.1.

The first half drives ``OpenAIProvider`` directly with a fake sleep and clock, so the
retry waits are asserted exactly and nothing really waits. The second half runs the
real ``durabatch`` command line against the same server and reads the SQLite file back.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from crashkit import (
    NOT_FINISHED,
    EventLog,
    Proc,
    Workspace,
    doc_ids,
    of_type,
    query,
    signal_when,
)
from fakeapi import (
    FakeAPI,
    Reply,
    context_length,
    error_body,
    http_date,
    insufficient_quota,
    is_entities,
    model_not_found,
    ok_content,
    ok_entities,
    ok_summary,
    rate_limited,
    response_format_unsupported,
    retry_after_ms,
    server_error,
    step_of,
    unauthorized,
    user_text,
)
from faketime import FakeTime

from durabatch.errors import (
    AuthError,
    Cancelled,
    DocumentError,
    ModelNotFound,
    ProviderOutage,
    QuotaExhausted,
    Reason,
)
from durabatch.models.base import CallRecord, Entity
from durabatch.models.openai import OpenAIProvider
from durabatch.models.retry import RetryPolicy

MODEL = "gpt-5.4-mini"
KEY = "sk-test"


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with FakeAPI() as server:
        yield server


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


Make = Callable[..., OpenAIProvider]


@pytest.fixture
def make(api: FakeAPI, fake_time: FakeTime) -> Iterator[Make]:
    """Providers on the fake server whose retry policy never really sleeps; closed after.
    The read timeout is only reached by a test about it: a stall of this busy process
    (the server's threads share it) must not add a retry to a test counting calls."""
    made: list[OpenAIProvider] = []

    def build(*, read_timeout: float = 30.0, **policy: Any) -> OpenAIProvider:
        settings: dict[str, Any] = {"max_attempts": 6, "max_total_seconds": 300.0,
                                    "base_delay": 1.0, "max_delay": 60.0} | policy  # fmt: skip
        retry = RetryPolicy(**settings, sleep=fake_time.sleep, clock=fake_time.clock,
                            random=lambda: 0.5)  # fmt: skip
        made.append(OpenAIProvider(base_url=api.base_url, api_key=KEY, policy=retry,
                                   read_timeout=read_timeout, connect_timeout=1.0))  # fmt: skip
        return made[-1]

    yield build
    for provider in made:
        provider.close()


@pytest.fixture
def provider(make: Make) -> OpenAIProvider:
    return make()


def statuses(calls: tuple[CallRecord, ...]) -> list[int | None]:
    return [c.http_status for c in calls]


# -- one call -----------------------------------------------------------------------------


def test_ok_reply_returns_value_and_one_call_row(api: FakeAPI,
                                                provider: OpenAIProvider) -> None:  # fmt: skip
    api.script(ok_summary("A short summary.", prompt_tokens=123, completion_tokens=45))
    reply = provider.summarize("DOC-1 The harbour works start in May.", MODEL)
    assert reply.value == "A short summary."
    [call] = reply.calls
    assert (call.input_tokens, call.output_tokens) == (123, 45)
    assert call.http_status == 200 and call.error is None and call.error_class is None
    assert call.host == "127.0.0.1" and call.retry == 1
    assert call.model == MODEL and call.latency_ms >= 0


def test_requests_carry_key_model_and_the_text(api: FakeAPI, provider: OpenAIProvider) -> None:
    provider.summarize("DOC-1 summary text", MODEL)
    provider.entities("DOC-1 entities text", MODEL)
    summary, entities = api.completions()
    for request in (summary, entities):
        assert request["headers"]["authorization"] == f"Bearer {KEY}"
        assert request["json"]["model"] == MODEL
    assert "DOC-1 summary text" in user_text(summary)
    assert "response_format" not in summary["json"]
    assert "DOC-1 entities text" in user_text(entities)
    assert "response_format" in entities["json"] and is_entities(entities)
    assert not is_entities(summary)


def test_entities_are_parsed(api: FakeAPI, provider: OpenAIProvider) -> None:
    api.script(ok_entities([{"text": "Alice Morgan", "type": "PERSON"},
                            {"text": "Rotterdam", "type": "LOCATION"}]))  # fmt: skip
    reply = provider.entities("Alice Morgan went to Rotterdam.", MODEL)
    assert reply.value == [Entity("Alice Morgan", "PERSON"), Entity("Rotterdam", "LOCATION")]
    assert len(reply.calls) == 1


# -- retries and waits ------------------------------------------------------------------------


def test_retry_after_seconds_is_waited_exactly(api: FakeAPI, provider: OpenAIProvider,
                                               fake_time: FakeTime) -> None:  # fmt: skip
    api.script(rate_limited("7"), ok_summary("fine"))
    reply = provider.summarize("text", MODEL)
    assert reply.value == "fine"
    assert fake_time.waits == [7.0]
    assert statuses(reply.calls) == [429, 200]
    assert [c.retry for c in reply.calls] == [1, 2]
    assert reply.calls[0].error is not None and reply.calls[0].error_class


def test_retry_after_ms(api: FakeAPI, provider: OpenAIProvider, fake_time: FakeTime) -> None:
    api.script(retry_after_ms(1500), ok_summary("fine"))
    assert provider.summarize("text", MODEL).value == "fine"
    assert fake_time.waits == [1.5]


def test_retry_after_http_date(api: FakeAPI, provider: OpenAIProvider,
                               fake_time: FakeTime) -> None:  # fmt: skip
    api.script(rate_limited(http_date(10)), ok_summary("fine"))
    assert provider.summarize("text", MODEL).value == "fine"
    [wait] = fake_time.waits
    assert 8.0 <= wait <= 10.0  # the date has one-second resolution


def test_retry_after_is_capped_at_max_delay(api: FakeAPI, provider: OpenAIProvider,
                                            fake_time: FakeTime) -> None:  # fmt: skip
    api.script(rate_limited("3600"), ok_summary("fine"))
    assert provider.summarize("text", MODEL).value == "fine"
    assert fake_time.waits == [60.0]


def test_5xx_backoff_is_exponential_with_full_jitter(api: FakeAPI, make: Make,
                                                     fake_time: FakeTime) -> None:  # fmt: skip
    api.script(server_error(500), server_error(503), server_error(502), ok_summary("fine"))
    provider = make(max_delay=3.0)
    reply = provider.summarize("text", MODEL)
    assert reply.value == "fine"
    # random() = 0.5 of min(max_delay, base * 2**(n-1)): 0.5*1, 0.5*2, 0.5*min(3, 4)
    assert fake_time.waits == [0.5, 1.0, 1.5]
    assert statuses(reply.calls) == [500, 503, 502, 200]
    assert [c.retry for c in reply.calls] == [1, 2, 3, 4]
    assert all(c.error and c.error_class for c in reply.calls[:3])
    assert reply.calls[3].ok and reply.calls[3].error_class is None


def test_insufficient_quota_pauses_at_once(api: FakeAPI, provider: OpenAIProvider,
                                           fake_time: FakeTime) -> None:  # fmt: skip
    api.script(insufficient_quota())
    with pytest.raises(QuotaExhausted) as raised:
        provider.summarize("text", MODEL)
    assert len(api.completions()) == 1
    assert fake_time.waits == []
    assert statuses(raised.value.calls) == [429]
    assert raised.value.exit_code == NOT_FINISHED


def test_persistent_503_is_an_outage_after_max_attempts(api: FakeAPI, provider: OpenAIProvider,
                                                        fake_time: FakeTime) -> None:  # fmt: skip
    api.default = lambda request: server_error(503)
    with pytest.raises(ProviderOutage) as raised:
        provider.summarize("text", MODEL)
    assert len(api.completions()) == 6
    assert len(raised.value.calls) == 6 and statuses(raised.value.calls) == [503] * 6
    assert fake_time.waits == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert raised.value.exit_code == NOT_FINISHED


def test_outage_stops_when_the_time_budget_runs_out(api: FakeAPI, make: Make,
                                                    fake_time: FakeTime) -> None:  # fmt: skip
    api.default = lambda request: server_error(503)
    provider = make(max_total_seconds=3.0)
    with pytest.raises(ProviderOutage) as raised:
        provider.summarize("text", MODEL)
    # waits 0.5 then 1.0 (1.5 s spent); the next 2.0 would pass 3 s: stop after 3 attempts
    assert fake_time.waits == [0.5, 1.0]
    assert len(api.completions()) == len(raised.value.calls) == 3


def test_read_timeout_is_retried(api: FakeAPI, make: Make, fake_time: FakeTime) -> None:
    api.script(ok_summary("too late", delay=20.0), ok_summary("fine"))
    provider = make(read_timeout=0.5)
    started = time.monotonic()
    reply = provider.summarize("text", MODEL)
    assert time.monotonic() - started < 10  # gave up at the read timeout, not at the 20 s reply
    assert reply.value == "fine"
    first, second = reply.calls
    assert first.http_status is None and first.error
    assert "timeout" in (first.error_class or "").lower()
    assert second.ok and len(fake_time.waits) == 1


def test_body_cut_off_mid_stream_is_retried(api: FakeAPI, provider: OpenAIProvider) -> None:
    api.script(ok_summary("a summary long enough to cut in half", drop_after=30),
               ok_summary("fine"))  # fmt: skip
    reply = provider.summarize("text", MODEL)
    assert reply.value == "fine"
    assert len(reply.calls) == 2 and reply.calls[0].error and reply.calls[1].ok
    assert len(api.completions()) == 2


def test_connection_closed_without_reply_is_retried(api: FakeAPI,
                                                    provider: OpenAIProvider) -> None:  # fmt: skip
    api.script(Reply(close_without_reply=True), ok_summary("fine"))
    assert provider.summarize("text", MODEL).value == "fine"
    assert len(api.completions()) == 2


# -- errors that are not retried ------------------------------------------------------------


def test_401_halts_and_names_the_setting_not_the_key(api: FakeAPI, provider: OpenAIProvider,
                                                     fake_time: FakeTime) -> None:  # fmt: skip
    api.script(unauthorized())
    with pytest.raises(AuthError) as raised:
        provider.summarize("text", MODEL)
    assert "DURABATCH_API_KEY" in raised.value.message
    assert KEY not in str(raised.value) and KEY not in repr(raised.value.calls)
    assert len(api.completions()) == 1 and fake_time.waits == []
    assert statuses(raised.value.calls) == [401]


def test_404_model_not_found_halts_naming_the_model(api: FakeAPI,
                                                    provider: OpenAIProvider) -> None:  # fmt: skip
    api.script(model_not_found("gpt-nope"))
    with pytest.raises(ModelNotFound) as raised:
        provider.summarize("text", "gpt-nope")
    assert "gpt-nope" in raised.value.message
    assert len(api.completions()) == 1


def test_context_length_is_a_document_error(api: FakeAPI, provider: OpenAIProvider,
                                            fake_time: FakeTime) -> None:  # fmt: skip
    api.script(context_length())
    with pytest.raises(DocumentError) as raised:
        provider.summarize("text", MODEL)
    assert raised.value.reason == Reason.CONTEXT_LENGTH
    assert len(api.completions()) == 1 and fake_time.waits == []
    assert statuses(raised.value.calls) == [400]


# -- the entities reply --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"entities": [{"text": "ACME", "type": "COMPANY"}]}', [Entity("ACME", "ORG")]),
        ('```json\n{"entities": [{"text": "Kim", "type": "PERSON"}]}\n```',
         [Entity("Kim", "PERSON")]),
        ('[{"text": "Oslo", "type": "location"}]', [Entity("Oslo", "LOCATION")]),
    ],
)  # fmt: skip
def test_off_schema_entities_are_repaired(api: FakeAPI, provider: OpenAIProvider, content: str,
                                          expected: list[Entity]) -> None:  # fmt: skip
    api.script(ok_content(content))
    assert provider.entities("text", MODEL).value == expected
    assert len(api.completions()) == 1


def test_entities_without_the_key_are_asked_again(api: FakeAPI, provider: OpenAIProvider) -> None:
    api.script(ok_content('{"people": ["Kim"]}'), ok_entities([{"text": "Kim", "type": "PERSON"}]))
    reply = provider.entities("text", MODEL)
    assert reply.value == [Entity("Kim", "PERSON")]
    assert len(api.completions()) == 2 and len(reply.calls) == 2


def test_invalid_json_every_time_fails_the_document(api: FakeAPI,
                                                    provider: OpenAIProvider) -> None:  # fmt: skip
    api.default = lambda request: ok_content("I found some entities: Kim and ACME.")
    with pytest.raises(DocumentError) as raised:
        provider.entities("text", MODEL)
    assert raised.value.reason == Reason.INVALID_JSON
    requests = len(api.completions())
    assert 2 <= requests <= 6
    assert len(raised.value.calls) == requests


def test_truncated_entities_are_never_a_value(api: FakeAPI, provider: OpenAIProvider) -> None:
    # valid JSON, but the model stopped at its limit: the list may be missing entities
    api.script(ok_content('{"entities": []}', finish_reason="length"))
    with pytest.raises(DocumentError) as raised:
        provider.entities("text", MODEL)
    assert raised.value.reason == Reason.TRUNCATED
    [call] = raised.value.calls
    assert call.error and call.http_status == 200 and call.output_tokens == 20


def test_a_summary_cut_by_length_is_not_a_value(api: FakeAPI, provider: OpenAIProvider) -> None:
    api.script(ok_content("The harbour works will", finish_reason="length"))
    with pytest.raises(DocumentError) as raised:
        provider.summarize("text", MODEL)
    assert raised.value.reason == Reason.TRUNCATED
    assert all(call.error for call in raised.value.calls)


def test_response_format_falls_back_and_is_remembered(
    api: FakeAPI, provider: OpenAIProvider
) -> None:
    def picky(request: dict[str, Any]) -> Reply:
        kind = (request["json"].get("response_format") or {}).get("type")
        if kind in ("json_schema", "json_object"):
            return response_format_unsupported()
        return ok_entities([{"text": "ACME", "type": "ORG"}])

    api.default = picky
    first = provider.entities("first", MODEL)
    assert first.value == [Entity("ACME", "ORG")]
    assert statuses(first.calls) == [400, 400, 200]  # the refusals are recorded too
    kinds = [(r["json"].get("response_format") or {}).get("type") for r in api.completions()]
    assert kinds == ["json_schema", "json_object", None]
    assert provider.entities("second", MODEL).value == [Entity("ACME", "ORG")]
    assert len(api.completions()) == 4  # the second call went straight to plain
    assert "response_format" not in api.completions()[-1]["json"]


def test_bad_request_is_a_document_error(api: FakeAPI, provider: OpenAIProvider) -> None:
    api.script(Reply(400, body={"error": {"message": "messages[0] is invalid", "code": None,
                                          "type": "invalid_request_error"}}))  # fmt: skip
    with pytest.raises(DocumentError) as raised:
        provider.summarize("text", MODEL)
    assert raised.value.reason == Reason.BAD_REQUEST
    assert len(api.completions()) == 1


def test_rate_limit_headers_hold_back_the_next_call(api: FakeAPI, provider: OpenAIProvider,
                                                    fake_time: FakeTime) -> None:  # fmt: skip
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
    api.script(ok_summary("first", headers=spent), ok_summary("second"))
    assert provider.summarize("text", MODEL).value == "first"
    assert fake_time.waits == []
    assert provider.summarize("text", MODEL).value == "second"
    assert fake_time.waits == [2.0]


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, body="<html>upstream hiccup</html>"),
        Reply(200, body={"choices": []}),
    ],
    ids=["not-json", "no-choices"],
)
def test_a_malformed_200_is_a_failed_attempt(api: FakeAPI, provider: OpenAIProvider,
                                             reply: Reply) -> None:  # fmt: skip
    api.script(reply, ok_summary("fine"))
    result = provider.summarize("text", MODEL)
    assert result.value == "fine"
    assert result.calls[0].error and result.calls[0].error_class and result.calls[1].ok


@pytest.mark.parametrize("finish", ["stop", "content_filter"])
def test_no_text_fails_only_that_document_and_is_not_retried(
    api: FakeAPI, provider: OpenAIProvider, finish: str
) -> None:
    api.script(ok_content("", finish_reason=finish), ok_summary("never asked"))
    with pytest.raises(DocumentError) as failed:
        provider.summarize("text", MODEL)
    assert failed.value.reason == Reason.REFUSED and finish in failed.value.message
    assert len(api.completions()) == 1 and failed.value.calls[0].error_class == "EmptyReply"


def test_403_is_an_auth_error(api: FakeAPI, provider: OpenAIProvider) -> None:
    api.script(Reply(403, body={"error": {"message": "forbidden", "code": None, "type": None}}))
    with pytest.raises(AuthError):
        provider.entities("text", MODEL)
    assert len(api.completions()) == 1


# -- the command line, end to end -------------------------------------------------------------

DOCS = 6


def doc_text(n: int) -> str:
    return (
        f"DOC-{n:02d} Alice Morgan of Northwind Trading met the Riverton council on {n} May "
        f"2025 to agree a budget of ${n * 1000:,} for the harbour depot.\n"
    )


def token_of(request: dict[str, Any]) -> str | None:
    found = [word for word in user_text(request).split() if word.startswith("DOC-")]
    return found[0] if found else None


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(1, DOCS + 1):
        (folder / f"doc_{n:02d}.txt").write_text(doc_text(n), encoding="utf-8")
    workspace = Workspace(tmp_path, extra_env={"DURABATCH_API_KEY": KEY})
    yield workspace
    workspace.cleanup()


def run_args(api: FakeAPI, *extra: str) -> list[str]:
    return ["run", "in", "--provider", "openai", "--base-url", api.base_url, "--model", MODEL,
            *extra]  # fmt: skip


def run_openai(ws: Workspace, api: FakeAPI, *extra: str, retry_seconds: str = "5") -> Proc:
    return ws.cli(*run_args(api, *extra), env={"DURABATCH_RETRY_SECONDS": retry_seconds})


def documents(ws: Workspace) -> dict[str, sqlite3.Row]:
    rows = query(ws.db, "SELECT path, status, reason, error FROM documents")
    return {Path(r["path"]).name: r for r in rows}


def run_status(ws: Workspace) -> str:
    [row] = query(ws.db, "SELECT status FROM runs")
    return str(row["status"])


def secret_free(ws: Workspace, secret: str) -> list[str]:
    """Every file of the workspace except the inputs that holds ``secret``."""
    return [
        str(path)
        for path in ws.root.rglob("*")
        if path.is_file() and "in" not in path.relative_to(ws.root).parts[:1]
        and secret.encode() in path.read_bytes()
    ]  # fmt: skip


def test_cli_happy_path_records_every_call(ws: Workspace, api: FakeAPI) -> None:
    proc = run_openai(ws, api)
    assert proc.popen.returncode == 0, proc.describe()
    assert {r["status"] for r in documents(ws).values()} == {"done"}
    requests = api.completions()
    assert len(requests) == 2 * DOCS
    assert sorted(step_of(r) for r in requests) == ["entities"] * DOCS + ["summarize"] * DOCS
    assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in requests)
    rows = query(ws.db, "SELECT step, provider, model, host, http_status, retry, error,"
                        " input_tokens, output_tokens FROM model_calls")  # fmt: skip
    assert len(rows) == 2 * DOCS
    for row in rows:
        assert (row["provider"], row["model"], row["host"]) == ("openai", MODEL, "127.0.0.1")
        assert (row["http_status"], row["retry"], row["error"]) == (200, 1, None)
        assert (row["input_tokens"], row["output_tokens"]) == (100, 20)
    exported = ws.export(ws.run_ids()[0])
    third = next(r for path, r in exported.items() if path.endswith("doc_03.txt"))
    assert third["summary"] == "Summary: " + doc_text(3).strip()[:60]
    assert third["entities"] == [{"text": "ACME", "type": "ORG"}]
    assert secret_free(ws, KEY) == []


def test_cli_bad_key_halts_without_failing_documents(ws: Workspace, api: FakeAPI) -> None:
    api.default = lambda request: unauthorized()
    proc = run_openai(ws, api)
    assert proc.popen.returncode == 3, proc.describe()
    assert "DURABATCH_API_KEY" in proc.stderr
    assert KEY not in proc.stderr and KEY not in proc.stdout
    assert not [r for r in documents(ws).values() if r["status"] == "failed"]
    assert run_status(ws) == "halted"
    assert 1 <= len(api.completions()) <= 4  # what was in flight, no retries
    assert secret_free(ws, KEY) == []


def test_cli_a_server_echoing_the_key_does_not_put_it_in_the_db(ws: Workspace,
                                                                api: FakeAPI) -> None:  # fmt: skip
    def echo_key(request: dict[str, Any]) -> Reply:  # some proxies quote the key they refused
        key = request["headers"]["authorization"].removeprefix("Bearer ")
        return Reply(401, body=error_body(f"Invalid API key: {key}", "auth", "invalid_api_key"))

    api.default = echo_key
    proc = run_openai(ws, api)
    assert proc.popen.returncode == 3, proc.describe()
    assert KEY not in proc.stderr + proc.stdout
    assert secret_free(ws, KEY) == []


def test_cli_quota_pauses_then_resume_finishes(ws: Workspace, api: FakeAPI) -> None:
    api.default = lambda request: insufficient_quota()
    proc = run_openai(ws, api)
    assert proc.popen.returncode == NOT_FINISHED, proc.describe()
    assert run_status(ws) == "paused"
    assert not [r for r in documents(ws).values() if r["status"] == "failed"]
    assert "quota" in proc.stderr.lower()
    api.default = lambda request: ok_summary("fine") if not is_entities(request) else ok_entities(
        [{"text": "Kim", "type": "PERSON"}]
    )  # fmt: skip
    resumed = ws.cli("resume", ws.run_ids()[0])
    assert resumed.popen.returncode == 0, resumed.describe()
    assert {r["status"] for r in documents(ws).values()} == {"done"}
    assert run_status(ws) == "done"


def test_cli_outage_beyond_the_budget_pauses(ws: Workspace, api: FakeAPI) -> None:
    unavailable = server_error(503)
    unavailable.headers["Retry-After"] = "0.5"
    api.default = lambda request: unavailable
    started = time.monotonic()
    proc = run_openai(ws, api, retry_seconds="1.2")
    assert proc.popen.returncode == NOT_FINISHED, proc.describe()
    assert time.monotonic() - started < 30
    assert run_status(ws) == "paused"
    assert not [r for r in documents(ws).values() if r["status"] == "failed"]
    assert not of_type(ws.events(), "step_failed")
    # every attempt the server saw is in the database, with its status
    rows = query(ws.db, "SELECT http_status, error_class FROM model_calls")
    assert len(rows) == len(api.completions()) > 0
    assert {r["http_status"] for r in rows} == {503}
    assert all(r["error_class"] for r in rows)


def test_cli_one_document_the_server_keeps_failing_fails_alone(ws: Workspace,
                                                                api: FakeAPI) -> None:  # fmt: skip
    """Past the retry budget on one document while the others are answered is not an
    outage: that document fails (its attempts count, then it ends failed), the others
    finish, and the run does not pause. It used to pause, and every resume paid again."""
    broken = server_error(500)
    broken.headers["Retry-After"] = "0.1"
    api.on(lambda request: token_of(request) == "DOC-04", broken)
    proc = run_openai(ws, api, "--concurrency", "3", retry_seconds="1.2")
    assert proc.popen.returncode == 1, proc.describe()
    assert run_status(ws) == "done"
    docs = documents(ws)
    assert docs["doc_04.txt"]["status"] == "failed" and docs["doc_04.txt"]["reason"] == "error"
    assert "while it answered other documents" in docs["doc_04.txt"]["error"]
    assert "failed 3 times" in docs["doc_04.txt"]["error"]
    assert {name for name, r in docs.items() if r["status"] == "done"} == {
        f"doc_{n:02d}.txt" for n in range(1, DOCS + 1) if n != 4
    }
    # every attempt the server saw for it is recorded, and counted as wasted
    asked = [r for r in api.completions() if token_of(r) == "DOC-04"]
    (doc_id,) = [r["id"] for r in query(ws.db, "SELECT id FROM documents WHERE path LIKE ?",
                                        ("%doc_04.txt",))]  # fmt: skip
    calls = query(ws.db, "SELECT http_status, kept FROM model_calls WHERE doc_id = ?", (doc_id,))
    assert len(calls) == len(asked) > 0 and {(c["http_status"], c["kept"]) for c in calls} == {
        (500, 0)
    }


def test_cli_context_length_fails_only_that_document(ws: Workspace, api: FakeAPI) -> None:
    (ws.root / "in" / "doc_04.txt").write_text("TOOLONG " * 200, encoding="utf-8")
    api.on(lambda request: "TOOLONG" in user_text(request), context_length())
    proc = run_openai(ws, api)
    assert proc.popen.returncode == 1, proc.describe()
    docs = documents(ws)
    assert docs["doc_04.txt"]["status"] == "failed"
    assert docs["doc_04.txt"]["reason"] == "context_length_exceeded"
    assert {name for name, r in docs.items() if r["status"] == "done"} == {
        f"doc_{n:02d}.txt" for n in range(1, DOCS + 1) if n != 4
    }
    # not retried like a network error: the whole piece once, then split in two once
    too_long = [r for r in api.completions() if "TOOLONG" in user_text(r)]
    assert 2 <= len(too_long) <= 3
    assert len(user_text(too_long[1])) < len(user_text(too_long[0]))


def test_cli_kill_mid_flight_never_repays_a_finished_step(ws: Workspace, tmp_path: Path) -> None:
    for n in range(DOCS + 1, 13):
        (tmp_path / "in" / f"doc_{n:02d}.txt").write_text(doc_text(n), encoding="utf-8")
    with FakeAPI(latency=0.5) as api:
        proc = ws.spawn(*run_args(api, "--concurrency", "4"),
                        env={"DURABATCH_RETRY_SECONDS": "5"})  # fmt: skip
        log = EventLog(ws.db)

        def model_steps_done(events: list[Any]) -> bool:  # ... and a call is on the wire
            done = of_type(events, "step_completed")
            committed = sum(e.step in ("summarize", "entities") for e in done)
            return committed >= 3 and api.answering > 0

        signal_when(proc, log, model_steps_done, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        api.wait_idle()  # the server has read and logged whatever the dead process sent
        at_kill = log.refresh()  # everything the dead process committed
        before = api.completions()
        resumed = ws.cli("resume", ws.run_ids()[0], "--concurrency", "4")
        assert resumed.popen.returncode == 0, resumed.describe()
        after = api.completions()[len(before) :]

    token = {doc: "DOC-" + Path(path).stem.split("_")[1] for path, doc in doc_ids(at_kill).items()}
    finished = {(token[e.doc_id], e.step) for e in of_type(at_kill, "step_completed")
                if e.doc_id is not None}  # fmt: skip
    assert len([f for f in finished if f[1] != "extract"]) >= 3
    lost = {(token_of(r), step_of(r)) for r in before} - finished
    assert 1 <= len(lost) <= 4, lost  # killed mid-flight; the loss is bounded by concurrency
    repaid = [(token_of(r), step_of(r)) for r in after if (token_of(r), step_of(r)) in finished]
    assert repaid == [], f"calls repeated after the kill for finished steps: {repaid}"
    # the resumed session did the rest: every (document, model step) asked exactly once
    asked = [(token_of(r), step_of(r)) for r in after]
    assert len(asked) == len(set(asked))
    expected = {(t, s) for t in token.values() for s in ("summarize", "entities")} - finished
    assert set(asked) == expected
    assert {r["status"] for r in documents(ws).values()} == {"done"}
    assert ws.verify(ws.run_ids()[0]).popen.returncode == 0


# -- review fixes: the less common shapes of failure ------------------------------------------


def test_402_payment_required_pauses_like_insufficient_quota(
    api: FakeAPI, provider: OpenAIProvider
) -> None:
    api.script(Reply(402, body={"error": {"message": "Insufficient Balance"}}))
    with pytest.raises(QuotaExhausted, match="Insufficient Balance"):
        provider.summarize("text", MODEL)
    assert len(api.completions()) == 1


def test_a_top_level_error_body_is_understood(api: FakeAPI, provider: OpenAIProvider) -> None:
    body = {"object": "error", "message": "This model's maximum context length is 4096 tokens",
            "code": 400}  # fmt: skip
    api.script(Reply(400, body=body))
    with pytest.raises(DocumentError) as failed:
        provider.summarize("text", MODEL)
    assert failed.value.reason == Reason.CONTEXT_LENGTH


def test_an_unrelated_400_does_not_give_up_structured_output(
    api: FakeAPI, provider: OpenAIProvider
) -> None:
    api.script(Reply(400, body={"error": {"message": "wrong number format in field x"}}))
    with pytest.raises(DocumentError) as failed:
        provider.entities("text", MODEL)
    assert failed.value.reason == Reason.BAD_REQUEST
    api.script(ok_entities([{"text": "ACME", "type": "ORG"}]))
    provider.entities("text", MODEL)
    assert "json_schema" in json.dumps(api.completions()[-1]["json"]["response_format"])


def test_an_undecodable_body_is_retried(api: FakeAPI, provider: OpenAIProvider) -> None:
    broken = Reply(200, headers={"content-encoding": "gzip"}, body=b"not gzip at all")
    api.script(broken, ok_summary("fine"))
    reply = provider.summarize("text", MODEL)
    assert reply.value == "fine" and reply.calls[0].error_class == "DecodingError"


def test_a_drain_stops_retrying_and_keeps_the_attempts(api: FakeAPI, fake_time: FakeTime) -> None:
    stopping = {"now": False}

    def sleep(seconds: float) -> None:
        stopping["now"] = True  # the drain starts while we wait

    policy = RetryPolicy(sleep=sleep, clock=fake_time.clock, cancelled=lambda: stopping["now"])
    provider = OpenAIProvider(base_url=api.base_url, api_key=KEY, policy=policy)
    api.script(server_error(503), server_error(503), ok_summary("too late"))
    with pytest.raises(Cancelled) as cancelled:
        provider.summarize("text", MODEL)
    provider.close()
    assert len(api.completions()) == 1 and len(cancelled.value.calls) == 1


def test_a_key_the_server_echoes_never_reaches_a_message(
    api: FakeAPI, provider: OpenAIProvider
) -> None:
    api.script(Reply(401, body={"error": {"message": f"Invalid API key: {KEY}"}}))
    with pytest.raises(AuthError) as refused:
        provider.summarize("text", MODEL)
    assert KEY not in str(refused.value) and all(KEY not in (c.error or "") for c in
                                                 refused.value.calls)  # fmt: skip
