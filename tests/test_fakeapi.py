"""The fake OpenAI-compatible server answers what it was scripted to, over real HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fakeapi import (
    FakeAPI,
    Reply,
    context_length,
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
    unauthorized,
    user_text,
)

SUMMARY_REQUEST: dict[str, Any] = {
    "model": "gpt-5.4-mini",
    "messages": [
        {"role": "system", "content": "Summarize the document."},
        {"role": "user", "content": "DOC-1 The harbour works start in May."},
    ],
}
ENTITIES_REQUEST: dict[str, Any] = {
    "model": "gpt-5.4-mini",
    "messages": [
        {"role": "system", "content": "List the named entities as JSON."},
        {"role": "user", "content": "DOC-2 ACME bought Northwind."},
    ],
    "response_format": {"type": "json_object"},
}


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with FakeAPI() as server:
        yield server


@pytest.fixture
def client(api: FakeAPI) -> Iterator[httpx.Client]:
    headers = {"Authorization": "Bearer sk-test"}
    with httpx.Client(base_url=api.base_url, headers=headers, timeout=5) as http:
        yield http


def post(client: httpx.Client, body: dict[str, Any] = SUMMARY_REQUEST) -> httpx.Response:
    return client.post("/chat/completions", json=body)


def content(response: httpx.Response) -> str:
    text: str = response.json()["choices"][0]["message"]["content"]
    return text


def error_code(response: httpx.Response) -> str | None:
    code: str | None = response.json()["error"]["code"]
    return code


def test_base_url_and_request_log(api: FakeAPI, client: httpx.Client) -> None:
    assert api.base_url.startswith("http://127.0.0.1:") and api.base_url.endswith("/v1")
    before = time.monotonic()
    post(client)
    [seen] = api.requests
    assert seen["method"] == "POST" and seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == "Bearer sk-test"
    assert seen["json"] == SUMMARY_REQUEST
    assert before <= seen["time"] <= time.monotonic()


def test_default_echo_summarizes_and_lists_entities(client: httpx.Client) -> None:
    summary = post(client)
    assert summary.status_code == 200
    assert content(summary) == "Summary: DOC-1 The harbour works start in May."
    assert summary.json()["usage"]["total_tokens"] == 120
    entities = post(client, ENTITIES_REQUEST)
    assert json.loads(content(entities)) == {"entities": [{"text": "ACME", "type": "ORG"}]}


def test_echo_recognises_entities_by_system_message(client: httpx.Client) -> None:
    body = {k: v for k, v in ENTITIES_REQUEST.items() if k != "response_format"}
    body["messages"] = [{"role": "system", "content": "Extract entities."}, body["messages"][1]]
    assert json.loads(content(post(client, body)))["entities"][0]["text"] == "ACME"


def test_script_is_used_in_order_then_default(api: FakeAPI, client: httpx.Client) -> None:
    api.script(ok_summary("one", prompt_tokens=7, completion_tokens=3), ok_content("two"))
    first, second, third = (post(client) for _ in range(3))
    assert content(first) == "one" and first.json()["usage"]["prompt_tokens"] == 7
    assert content(second) == "two"
    assert content(third).startswith("Summary: ")


def test_settable_default(api: FakeAPI, client: httpx.Client) -> None:
    api.default = lambda request: ok_summary("always " + user_text(request)[:5])
    assert content(post(client)) == "always DOC-1"


def test_matchers_answer_per_document(api: FakeAPI, client: httpx.Client) -> None:
    api.on(lambda r: "DOC-2" in user_text(r), context_length())
    api.on(is_entities, [ok_entities([{"text": "Kim", "type": "PERSON"}])])
    assert post(client, ENTITIES_REQUEST).status_code == 400  # first matcher wins
    assert post(client, ENTITIES_REQUEST).status_code == 400  # a single reply persists
    assert post(client).status_code == 200


def test_matcher_list_is_used_up(api: FakeAPI, client: httpx.Client) -> None:
    api.on(lambda r: True, [server_error(503), server_error(502)])
    assert [post(client).status_code for _ in range(3)] == [503, 502, 200]


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (insufficient_quota(), 429, "insufficient_quota"),
        (server_error(), 500, None),
        (server_error(503), 503, None),
        (context_length(), 400, "context_length_exceeded"),
        (unauthorized(), 401, "invalid_api_key"),
        (model_not_found("gpt-nope"), 404, "model_not_found"),
    ],
)
def test_error_replies(api: FakeAPI, client: httpx.Client, reply: Reply, status: int,
                       code: str | None) -> None:  # fmt: skip
    api.script(reply)
    response = post(client)
    assert response.status_code == status
    assert error_code(response) == code


def test_error_reply_details(api: FakeAPI, client: httpx.Client) -> None:
    api.script(insufficient_quota(), model_not_found("gpt-nope"), response_format_unsupported())
    assert post(client).json()["error"]["type"] == "insufficient_quota"
    assert "gpt-nope" in post(client).json()["error"]["message"]
    unsupported = post(client)
    assert unsupported.status_code == 400
    assert "response_format" in unsupported.json()["error"]["message"]


def test_rate_limit_headers(api: FakeAPI, client: httpx.Client) -> None:
    api.script(rate_limited("7"), retry_after_ms(1500))
    first, second = post(client), post(client)
    assert first.status_code == 429 and first.headers["retry-after"] == "7"
    assert error_code(first) == "rate_limit_exceeded"
    assert second.status_code == 429 and second.headers["retry-after-ms"] == "1500"


def test_finish_reason_length(api: FakeAPI, client: httpx.Client) -> None:
    api.script(ok_content('{"entities": [{"te', finish_reason="length"))
    assert post(client).json()["choices"][0]["finish_reason"] == "length"


def test_str_and_bytes_bodies(api: FakeAPI, client: httpx.Client) -> None:
    api.script(Reply(200, body="not json"), Reply(502, body=b"<html>bad gateway</html>"))
    assert post(client).text == "not json"
    assert post(client).content == b"<html>bad gateway</html>"


def test_delay_is_a_read_timeout_for_an_impatient_client(api: FakeAPI,
                                                         client: httpx.Client) -> None:  # fmt: skip
    api.script(ok_summary("late", delay=1.0))
    with pytest.raises(httpx.ReadTimeout):
        client.post("/chat/completions", json=SUMMARY_REQUEST, timeout=0.2)
    assert content(post(client)).startswith("Summary: ")  # the server is fine afterwards


def test_trickle_sends_the_body_a_byte_at_a_time(api: FakeAPI, client: httpx.Client) -> None:
    api.script(Reply(200, body=b"x" * 30, trickle=0.02))
    started = time.monotonic()
    # no gap between two bytes reaches the read timeout, so httpx waits for all of them
    response = client.post("/chat/completions", json=SUMMARY_REQUEST, timeout=0.5)
    assert response.content == b"x" * 30 and time.monotonic() - started >= 30 * 0.02


def test_drop_after_cuts_the_body(api: FakeAPI, client: httpx.Client) -> None:
    api.script(ok_summary("a summary long enough to cut", drop_after=20))
    with pytest.raises(httpx.RemoteProtocolError):
        post(client)
    assert content(post(client)).startswith("Summary: ")


def test_close_without_reply(api: FakeAPI, client: httpx.Client) -> None:
    api.script(Reply(close_without_reply=True))
    with pytest.raises(httpx.RemoteProtocolError):
        post(client)
    assert post(client).status_code == 200


def test_keep_alive_reuses_one_connection(api: FakeAPI, client: httpx.Client) -> None:
    ports = set()
    for _ in range(5):
        response = post(client)
        stream = response.extensions["network_stream"]
        ports.add(stream.get_extra_info("client_addr")[1])
    assert len(ports) == 1


def test_unknown_path_is_404(api: FakeAPI, client: httpx.Client) -> None:
    assert client.get("/models").status_code == 404
    assert api.requests[0]["path"] == "/v1/models"


def test_concurrent_requests_are_served_in_parallel(api: FakeAPI) -> None:
    """No clock: each reply waits until all 16 requests are being answered at once, which
    a server answering one at a time never reaches (the wait then gives up: 503)."""
    together = threading.Barrier(16, timeout=30)  # a bound reached only on failure

    def once_all_are_in(request: dict[str, Any]) -> Reply:
        try:
            together.wait()
        except threading.BrokenBarrierError:
            return server_error(503)
        return ok_summary("together")

    api.default = once_all_are_in
    limits = httpx.Limits(max_connections=32)
    with (
        httpx.Client(base_url=api.base_url, limits=limits, timeout=60) as http,
        ThreadPoolExecutor(16) as pool,
    ):
        statuses = list(pool.map(lambda _: post(http).status_code, range(16)))
    assert statuses == [200] * 16
    assert len(api.requests) == 16
