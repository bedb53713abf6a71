"""A real webhook receiver on 127.0.0.1 that records what it receives, for delivery tests.

    with FakeHook() as hook:
        hook.script("POST", status(500), status(500))     # the next two POSTs fail
        hook.hold("notes_01")                            # POSTs of that document get no reply
        hook.release()                                   # ... until now: they are answered
        ...  # deliver to hook.url; read hook.requests and hook.stored afterwards

By default it behaves like an idempotent receiver: a POST with a new
``Idempotency-Key`` is stored and answered 201 ``{"id": ...}``; a key it has seen
is answered 409 with the same id; ``DELETE /ID`` and ``DELETE /by-key/KEY`` remove
the item (404 when it is not there). ``FakeHook(ids=False)`` answers POSTs with no
id. Like Stripe-style idempotency middleware, any request carrying a key a POST
carried is answered with that POST's reply (201) and does nothing else, and any request
carrying a key a DELETE carried gets that DELETE's reply again. Each request
is recorded (method, path, headers, JSON body) the moment it has arrived whole, before any
reply, so a test can kill the client mid-call.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] | str | None = None
    delay: float = 0.0
    act: bool = False  # do what the request asks, as unscripted, then answer after delay


def status(code: int, message: str = "", delay: float = 0.0) -> Reply:
    return Reply(code, {"error": message or f"scripted {code}"}, delay)


def stored_late(delay: float) -> Reply:
    """The request is acted on at once (a POST stored), its answer comes after ``delay``."""
    return Reply(delay=delay, act=True)


@dataclass
class FakeHook:
    requests: list[dict[str, Any]] = field(default_factory=list)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> body
    keys: dict[str, str] = field(default_factory=dict)  # Idempotency-Key -> id
    undo_keys: dict[str, Reply] = field(default_factory=dict)  # a DELETE's key -> its answer
    answers: list[int] = field(default_factory=list)  # the status of each reply, in order
    held: list[str] = field(default_factory=list)  # POSTs whose body mentions these hang
    ids: bool = True  # answer a POST with the id of what it stored
    _scripts: dict[str, deque[Reply]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: threading.Event = field(default_factory=threading.Event)
    _let_go: threading.Event = field(default_factory=threading.Event)  # set by release()

    def __enter__(self) -> FakeHook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hook._serve(self, "POST")

            def do_DELETE(self) -> None:
                hook._serve(self, "DELETE")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self._closing.set()
        self.release()
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def script(self, method: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts.setdefault(method, deque()).extend(replies)

    def hold(self, text: str) -> None:
        """Requests whose body or path holds ``text`` are recorded (and acted on), then
        get no reply until ``release`` or the receiver closes (unless the client times out
        or is killed first)."""
        with self._lock:
            if self._let_go.is_set():  # released before: a new hold waits for a new release
                self._let_go = threading.Event()
            self.held.append(text)

    def release(self) -> None:
        """Answer the requests held so far, at once; later ones are not held."""
        with self._lock:
            self.held.clear()
            self._let_go.set()

    def posts(self, text: str = "") -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST" and text in r["raw"]]

    def deletes(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "DELETE"]

    # -- serving ------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if len(body) < length:  # the client died mid-request: a server never sees it whole
            handler.close_connection = True
            return
        raw = body.decode("utf-8", "replace")
        request = {"method": method, "path": handler.path, "raw": raw,
                   "key": handler.headers.get("Idempotency-Key"),
                   "json": json.loads(raw) if raw else None}  # fmt: skip
        with self._lock:
            self.requests.append(request)
            scripted = self._scripts.get(method)
            reply = scripted.popleft() if scripted else None
        key = request["key"]
        if reply is None and key in self.undo_keys:
            reply = self.undo_keys[key]  # the DELETE's answer, replayed; nothing is done
        if reply is None and method != "POST" and key in self.keys:
            reply = Reply(201, {"id": self.keys[key]})  # the POST's, replayed
        if reply is None or reply.act:
            delay = reply.delay if reply else 0.0
            reply = self._post(request) if method == "POST" else self._delete(request)
            reply = Reply(reply.status, reply.body, delay)
            if method == "DELETE" and key:
                self.undo_keys[key] = reply
        with self._lock:
            self.answers.append(reply.status)
            held = any(text in raw + handler.path for text in self.held)
            let_go = self._let_go  # the release (or close) that ends this hold
        if held:
            let_go.wait()
        elif reply.delay:
            self._closing.wait(reply.delay)
        with contextlib.suppress(OSError):  # the client is gone (killed, or gave up)
            self._send(handler, reply)

    def _post(self, request: dict[str, Any]) -> Reply:
        key = request["key"] or ""
        with self._lock:
            if key in self.keys:
                answer = {"id": self.keys[key]} if self.ids else {}
                return Reply(409, {**answer, "error": "already have it"})
            item = f"item-{len(self.keys) + 1}"
            self.keys[key] = item
            self.stored[item] = request["json"]
        return Reply(201, {"id": item} if self.ids else {})

    def _delete(self, request: dict[str, Any]) -> Reply:
        parent, _, item = request["path"].rstrip("/").rpartition("/")
        with self._lock:
            if parent.endswith("/by-key"):
                item = self.keys.get(item, "")
            if self.stored.pop(item, None) is None:
                return Reply(404, {"error": "no such item"})
        return Reply(204)

    def _send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        body = b""
        if isinstance(reply.body, dict):
            body = json.dumps(reply.body).encode()
        elif isinstance(reply.body, str):
            body = reply.body.encode()
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
