"""A real, scriptable OpenAI-compatible HTTP server on 127.0.0.1 for provider tests.

    with FakeAPI() as api:
        api.script(rate_limited("7"), ok_summary("fine"))    # the next two requests
        api.on(lambda r: "DOC-7" in user_text(r), context_length())   # every DOC-7 request
        api.default = lambda r: ok_summary("always")          # everything else
        ...  # point a client at api.base_url; read api.requests afterwards

Replies are chosen, for each request, from the first matcher that applies, then from
the scripted queue, then from ``default`` (an echo of the request: entities for an
entities request, a summary otherwise). Each reply may wait, drop the body half way,
trickle it a byte at a time, or close the connection without a word, so the client
sees what a real network does.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Request = dict[str, Any]
Predicate = Callable[[Request], bool]
MODEL = "gpt-5.4-mini"


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | dict[str, Any] | None = None
    delay: float = 0.0  # seconds before anything is sent
    drop_after: int | None = None  # announce the full length, send this many bytes, close
    close_without_reply: bool = False
    trickle: float = 0.0  # seconds between the body's bytes, sent one at a time

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, dict):
            headers.setdefault("Content-Type", "application/json")
            return json.dumps(self.body).encode(), headers
        if isinstance(self.body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return self.body.encode(), headers
        return self.body or b"", headers


# -- reading a request ------------------------------------------------------------------


def _messages(request: Request, role: str) -> str:
    body = request.get("json") or {}
    parts = [m.get("content") for m in body.get("messages", []) if m.get("role") == role]
    return "\n".join(p for p in parts if isinstance(p, str))


def user_text(request: Request) -> str:
    return _messages(request, "user")


def system_text(request: Request) -> str:
    return _messages(request, "system")


def is_entities(request: Request) -> bool:
    """An entities request asks for JSON (response_format) or says 'entities' to the model."""
    body = request.get("json") or {}
    return "response_format" in body or "entities" in system_text(request).lower()


def step_of(request: Request) -> str:
    return "entities" if is_entities(request) else "summarize"


# -- typical replies ------------------------------------------------------------------------


def completion(content: str, *, finish_reason: str = "stop", prompt_tokens: int = 100,
               completion_tokens: int = 20, model: str = MODEL) -> dict[str, Any]:  # fmt: skip
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def ok_content(content: str, finish_reason: str = "stop", usage: tuple[int, int] = (100, 20),
               **reply: Any) -> Reply:  # fmt: skip
    body = completion(content, finish_reason=finish_reason, prompt_tokens=usage[0],
                      completion_tokens=usage[1])  # fmt: skip
    return Reply(200, body=body, **reply)


def ok_summary(text: str, prompt_tokens: int = 100, completion_tokens: int = 20,
               **reply: Any) -> Reply:  # fmt: skip
    return ok_content(text, usage=(prompt_tokens, completion_tokens), **reply)


def ok_entities(entities: Iterable[dict[str, Any]], prompt_tokens: int = 100,
                completion_tokens: int = 20, **reply: Any) -> Reply:  # fmt: skip
    content = json.dumps({"entities": list(entities)})
    return ok_content(content, usage=(prompt_tokens, completion_tokens), **reply)


def error_body(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def rate_limited(retry_after: str | None = "1") -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded")
    return Reply(429, headers, body)


def retry_after_ms(ms: int | float) -> Reply:
    body = error_body("Rate limit reached for tokens", "tokens", "rate_limit_exceeded")
    return Reply(429, {"retry-after-ms": str(ms)}, body)


def http_date(seconds_from_now: float) -> str:
    return formatdate(time.time() + seconds_from_now, usegmt=True)


def insufficient_quota() -> Reply:
    message = "You exceeded your current quota"
    return Reply(429, body=error_body(message, "insufficient_quota", "insufficient_quota"))


def server_error(status: int = 500) -> Reply:
    return Reply(status, body=error_body("The server had an error", "server_error", None))


def context_length() -> Reply:
    message = (
        "This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in 12000 tokens. Please reduce the length of the messages."
    )
    return Reply(400, body=error_body(message, "invalid_request_error", "context_length_exceeded"))


def unauthorized() -> Reply:
    message = "Incorrect API key provided: sk-te****. You can find your API key at ..."
    return Reply(401, body=error_body(message, "invalid_request_error", "invalid_api_key"))


def model_not_found(model: str = MODEL) -> Reply:
    message = f"The model `{model}` does not exist or you do not have access to it."
    return Reply(404, body=error_body(message, "invalid_request_error", "model_not_found"))


def response_format_unsupported() -> Reply:
    message = "Invalid parameter: 'response_format' of type 'json_schema' is not supported."
    return Reply(400, body=error_body(message, "invalid_request_error", None))


def echo(request: Request, latency: float = 0.0) -> Reply:
    """What a well-behaved model answers: entities for an entities request, else a summary."""
    if is_entities(request):
        return ok_entities([{"text": "ACME", "type": "ORG"}], delay=latency)
    return ok_summary("Summary: " + user_text(request)[:60], delay=latency)


def subword_tokens(text: str) -> int:
    """Tokens as a subword tokenizer counts English: a token per word of up to six
    letters (longer words split), one per run of punctuation (BPE vocabularies merge
    ``": "`` and the like). That gives about 1.3 tokens per English word, the usual
    rule of thumb."""
    return sum(-(-len(piece) // 6) for piece in re.findall(r"\w+|[^\w\s]+", text))


def realistic(request: Request) -> Reply:
    """A model whose answers and usage scale with the text: the summary is the first
    five sentences; the entities are the capitalised names and dates; usage counts
    the prompt (messages and any JSON schema) and the answer with ``subword_tokens``."""
    body = request.get("json") or {}
    sent = [m.get("content") or "" for m in body.get("messages", [])]
    prompt_tokens = sum(subword_tokens(m) + 4 for m in sent) + 3
    if "response_format" in body:
        prompt_tokens += subword_tokens(json.dumps(body["response_format"]))
    text = user_text(request)
    if is_entities(request):
        names = re.findall(r"(?:[A-Z][a-z]+ )+[A-Z][a-z]+|\d{1,2} [A-Z][a-z]+ \d{4}", text)
        found = [{"text": n, "type": "DATE" if n[0].isdigit() else "ORG"} for n in names]
        content = json.dumps({"entities": list({e["text"]: e for e in found}.values())})
    else:
        content = " ".join(re.split(r"(?<=[.!?])\s+", text)[:5])
    return ok_content(content, usage=(prompt_tokens, subword_tokens(content)))


# -- the server -------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: httpx pools connections
    disable_nagle_algorithm = True  # headers and body go out at once, no 40 ms ACK stall
    server: _Server

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        api = self.server.api
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:  # the client died mid-request: a real API never sees it whole
            self.close_connection = True
            return
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        request: Request = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "json": parsed,
            "time": time.monotonic(),
        }
        if self.path.rstrip("/") != "/v1/chat/completions" or self.command != "POST":
            api.record(request)
            self._send(Reply(404, body=error_body("no such endpoint", "invalid_request", None)))
            return
        with api._lock:
            api.answering += 1
        try:
            reply = api.reply_for(request)
            if api.before_reply is not None:  # e.g. stop the client so it cannot read the reply
                api.before_reply(request)
            self._send(reply)
        finally:
            with api._lock:
                api.answering -= 1
        if api.after_reply is not None:  # e.g. kill the client before it can commit
            api.after_reply(request)

    def _send(self, reply: Reply) -> None:
        closing = self.server.api.closing
        if reply.delay and closing.wait(reply.delay):  # the fake is closing: send nothing
            self.close_connection = True
            return
        if reply.close_without_reply:
            self.close_connection = True
            return
        body, headers = reply.encoded()
        self.send_response(reply.status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if reply.drop_after is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if reply.drop_after is not None:
            self.wfile.write(body[: reply.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return
        if reply.trickle:
            self.wfile.flush()  # the headers go out at once
            for i in range(len(body)):
                if closing.wait(reply.trickle):
                    self.close_connection = True
                    return
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
            return
        self.wfile.write(body)
        self.wfile.flush()

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # the client went away (timeout, reset): nothing to answer
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    api: FakeAPI

    def get_request(self) -> tuple[socket.socket, Any]:
        # counted from before accept() until tracked: idle() always sees a connection,
        # in the listen queue, being accepted, or tracked until its handler is done
        with self.api._lock:
            self.api.accepting += 1
        try:
            conn, address = super().get_request()
            self.api.track(conn, add=True)
        finally:
            with self.api._lock:
                self.api.accepting -= 1
        return conn, address

    def shutdown_request(self, request: Any) -> None:  # the handler is done with it
        super().shutdown_request(request)
        self.api.track(request, add=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up is not a test failure


class FakeAPI:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1, port chosen by the OS."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.requests: list[Request] = []
        self.default: Callable[[Request], Reply] = lambda r: echo(r, self.latency)
        self.answering = 0  # requests received whose reply is not yet sent in full
        # called once the reply is chosen (the request is logged), before any of it is sent
        self.before_reply: Callable[[Request], None] | None = None
        # called once a reply has been sent in full (flushed to the socket)
        self.after_reply: Callable[[Request], None] | None = None
        self.accepting = 0  # connections being taken from the listen queue, not yet tracked
        self.closing = threading.Event()  # set by close: delayed and trickled replies give up
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._matchers: list[tuple[Predicate, deque[Reply] | Reply]] = []
        self._open: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.api = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting --

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order (after any matcher that applies)."""
        with self._lock:
            self._queue.extend(replies)

    def on(self, predicate: Predicate, reply: Reply | list[Reply]) -> None:
        """A single reply answers every matching request; a list is used up in order."""
        with self._lock:
            self._matchers.append((predicate, deque(reply) if isinstance(reply, list) else reply))

    def reset(self) -> None:
        """Forget the script and the matchers (the requests log stays)."""
        with self._lock:
            self._queue.clear()
            self._matchers.clear()

    def reply_for(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            for predicate, replies in self._matchers:
                if not predicate(request):
                    continue
                if isinstance(replies, Reply):
                    return replies
                if replies:
                    return replies.popleft()
            if self._queue:
                return self._queue.popleft()
        return self.default(request)

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    # -- reading back --

    def completions(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    # -- lifetime --

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._open.add if add else self._open.discard)(conn)

    def idle(self) -> bool:
        """No connection open, none being accepted and none waiting to be: every request
        a client sent is logged and its handler done. Only meaningful once the clients
        are gone (a live client may connect again at any moment)."""
        with self._lock:
            if self._open or self.accepting:
                return False
            waiting, _, _ = select.select([self._server.socket], [], [], 0)
            return not waiting

    def wait_idle(self, timeout: float = 30) -> None:
        """Wait until ``idle``: after a client is killed, what it sent before it died is
        read and logged (or dropped as incomplete) by the time this returns. ``timeout``
        is only ever reached when a handler is stuck."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            assert time.monotonic() < deadline, f"the fake API still busy after {timeout}s"
            time.sleep(0.01)

    def close(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            still_open = list(self._open)
        for conn in still_open:  # wake handler threads parked on idle keep-alive sockets
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    def __enter__(self) -> FakeAPI:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()
