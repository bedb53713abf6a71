"""Spot and preemption notices: a real `durabatch run` watches a real loopback metadata server.

The server answers "no notice" (404, or FALSE for GCP) until the test flips it; the run must
then drain like on SIGTERM (exit 75, interrupted), and `resume` must finish it. The server
checks what the clouds check: AWS's IMDSv2 token (PUT first, then the token on every GET),
GCP's Metadata-Flavor header.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from crashkit import NOT_FINISHED, EventLog, Proc, Workspace, note_text, of_type, slow_html

from durabatch import spot

AWS_NOTICE = {"action": "terminate", "time": "2026-11-26T20:40:00Z"}
AWS_PATH = "/latest/meta-data/spot/instance-action"
TOKEN_PATH = "/latest/api/token"
GCP_PATH = "/computeMetadata/v1/instance/preempted"
URL_PATH = "/drain-please"
URL_BODY = "maintenance at 21:00\n\n   move your work elsewhere\n"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    status: int


class MetadataServer:
    """A threaded HTTP server on 127.0.0.1 playing AWS IMDSv2, GCP metadata and a plain URL."""

    def __init__(self) -> None:
        self.notice = False
        self.aws_body = json.dumps(AWS_NOTICE)
        self.broken = False  # every request answers 503
        self.seen: list[Seen] = []
        self.issued: list[str] = []
        self._valid: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> MetadataServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def expire_tokens(self) -> None:
        with self._lock:
            self._valid.clear()

    def requests(self, path: str, method: str = "GET") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == path and s.method == method]

    def answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        with self._lock:
            status, body = self._decide(method, path, headers)
            self.seen.append(Seen(method, path, headers, status))
        return status, body

    def _decide(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        if self.broken:
            return 503, "metadata service unavailable"
        if (method, path) == ("PUT", TOKEN_PATH):
            if "x-aws-ec2-metadata-token-ttl-seconds" not in headers:
                return 400, "missing TTL"
            token = f"tok-{len(self.issued) + 1}"
            self.issued.append(token)
            self._valid.add(token)
            return 200, token
        if (method, path) == ("GET", AWS_PATH):
            if headers.get("x-aws-ec2-metadata-token") not in self._valid:
                return 401, "Unauthorized"
            return (200, self.aws_body) if self.notice else (404, "Not Found")
        if (method, path) == ("GET", GCP_PATH):
            if headers.get("metadata-flavor") != "Google":
                return 403, "Missing Metadata-Flavor:Google header."
            return 200, "TRUE" if self.notice else "FALSE"
        if (method, path) == ("GET", URL_PATH):
            return (200, URL_BODY) if self.notice else (404, "no notice")
        return 404, "unknown path"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, body = server.answer(self.command, self.path, headers)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = _reply

            def log_message(self, format: str, *args: object) -> None:
                return None

        return Handler


@pytest.fixture
def server() -> Iterator[MetadataServer]:
    with MetadataServer() as metadata:
        yield metadata


def notes_folder(root: Path, count: int) -> str:
    folder = root / "in"
    folder.mkdir()
    for i in range(count):
        (folder / f"note_{i:03d}.txt").write_text(note_text(i), encoding="utf-8")
    return "in"


def slow_last_document(root: Path, inputs: str) -> None:
    """A last document that takes seconds to parse (~7 s here): a run cannot end before
    the notice, however fast its notes go. The runs are given a short ``--grace``, so the
    drain abandons that parse instead of waiting it out (resume does it again), and a
    generous ``--extract-timeout``, as a loaded machine parses slowly: ``SLOW_ARGS``, which
    each resume is given again (they are not kept with the run)."""
    slow = slow_html(4, note_text(999))
    (root / inputs / "zz_slow.html").write_text(slow, encoding="utf-8")


SLOW_ARGS = ("--grace", "1", "--extract-timeout", "600")


def wait_until(proc: Proc, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.popen.poll() is None, f"exited before {what}:\n{proc.describe()}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s\n{proc.describe()}"
        time.sleep(0.02)


def watch_args(kind: str, server: MetadataServer) -> list[str]:
    if kind == "url":
        return ["--watch-spot", server.base_url + URL_PATH]
    return ["--watch-spot", kind, "--spot-base-url", server.base_url]


POLLED = {"aws": AWS_PATH, "gcp": GCP_PATH, "url": URL_PATH}
NOTICE_WORDS = {
    "aws": "terminate at 2026-11-26T20:40:00Z",
    "gcp": "preempted",
    "url": "maintenance at 21:00 move your work elsewhere",  # trimmed to one line
}


@pytest.mark.parametrize("kind", ["aws", "gcp", "url"])
def test_a_notice_drains_the_run_and_resume_finishes_it(
    ws: Workspace, server: MetadataServer, kind: str
) -> None:
    notes = 300
    inputs = notes_folder(ws.root, notes)
    slow_last_document(ws.root, inputs)  # still busy at the notice, on any machine
    total = notes + 1
    log = EventLog(ws.db)
    proc = ws.spawn("run", inputs, "--concurrency", "1", "--spot-interval", "0.2", *SLOW_ARGS,
                    *watch_args(kind, server))  # fmt: skip
    path = POLLED[kind]

    def busy_and_polled() -> bool:
        done = len(of_type(log.refresh(), "step_completed")) >= 5
        return done and sum(s.status in (200, 404) for s in server.requests(path)) >= 2

    wait_until(proc, busy_and_polled, "five steps committed and two polls answered")
    if kind == "aws":  # the token dies: the watcher must fetch a new one and carry on
        server.expire_tokens()
        wait_until(proc, lambda: len(server.issued) >= 2, "a second token after a 401")
        wait_until(proc, lambda: any(s.headers.get("x-aws-ec2-metadata-token") == "tok-2"
                                     and s.status == 404 for s in server.requests(path)),
                   "a poll with the new token")  # fmt: skip
    assert "spot notice" not in proc.stderr
    server.notice = True
    flipped = time.monotonic()

    assert proc.wait(60) == NOT_FINISHED, proc.describe()
    assert time.monotonic() - flipped < 30, "the drain must start at the notice"
    assert f"spot notice: {NOTICE_WORDS[kind]}" in proc.stderr, proc.stderr
    assert "cannot read" not in proc.stderr, "no poll may have failed"
    assert "Traceback" not in proc.stderr
    [run_id] = ws.run_ids()
    status = ws.status(run_id)
    assert (status["status"], status["interruptions"]) == ("interrupted", 1)
    assert status["documents"]["running"] == 0
    assert 1 <= status["documents"]["done"] < total, "the notice must stop a busy run"
    [outcome] = [s["outcome"] for s in status["sessions"]]  # the notice is in the history
    assert outcome.startswith("interrupted: spot notice: "), outcome

    if kind == "aws":
        tokens = server.requests(TOKEN_PATH, "PUT")
        assert [s.headers["x-aws-ec2-metadata-token-ttl-seconds"] for s in tokens] == [
            "21600"
        ] * len(tokens)
        carried = {s.headers.get("x-aws-ec2-metadata-token") for s in server.requests(path)}
        assert carried == {"tok-1", "tok-2"}
    if kind == "gcp":
        assert all(s.headers.get("metadata-flavor") == "Google" for s in server.requests(path))

    resumed = ws.cli("resume", run_id, *SLOW_ARGS)  # not kept with the run: given again
    assert resumed.popen.returncode == 0, resumed.describe()
    verify = ws.verify(run_id)
    assert verify.popen.returncode == 0, verify.describe()
    status = ws.status(run_id)
    assert (status["status"], status["documents"]["done"]) == ("done", total)


def test_a_notice_already_up_stops_a_resume_without_harm(
    ws: Workspace, server: MetadataServer
) -> None:
    """A cron `resume` during the notice window ends interrupted; a later one finishes."""
    inputs = notes_folder(ws.root, 60)
    slow_last_document(ws.root, inputs)  # neither run nor resume ends before the first poll
    server.notice = True
    proc = ws.cli("run", inputs, *watch_args("aws", server), "--spot-interval", "0.2",
                  *SLOW_ARGS)  # fmt: skip
    assert proc.popen.returncode == NOT_FINISHED, proc.describe()
    [run_id] = ws.run_ids()
    assert ws.status(run_id)["status"] == "interrupted"
    again = ws.cli("resume", *watch_args("aws", server), *SLOW_ARGS)
    assert again.popen.returncode == NOT_FINISHED, again.describe()
    assert "spot notice: terminate" in again.stderr
    server.notice = False  # a new machine: no notice
    last = ws.cli("resume", *watch_args("aws", server), *SLOW_ARGS)
    assert last.popen.returncode == 0, last.describe()
    assert ws.verify(run_id).popen.returncode == 0
    assert ws.status(run_id)["status"] == "done"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_unreachable_endpoint_is_noted_once_and_the_run_finishes(ws: Workspace) -> None:
    inputs = notes_folder(ws.root, 40)
    url = f"http://127.0.0.1:{closed_port()}"
    proc = ws.cli("run", inputs, "--concurrency", "1", "--watch-spot", "aws",
                  "--spot-base-url", url, "--spot-interval", "0.05")  # fmt: skip
    assert proc.popen.returncode == 0, proc.describe()
    notes = [line for line in proc.stderr.splitlines() if "spot watch" in line]
    assert len(notes) == 1, proc.stderr
    assert f"cannot read {url}" in notes[0] and "the run goes on" in notes[0]
    [run_id] = ws.run_ids()
    assert ws.status(run_id)["documents"]["done"] == 40


def test_a_failing_endpoint_is_polled_on_and_noted_once(
    ws: Workspace, server: MetadataServer
) -> None:
    inputs = notes_folder(ws.root, 40)
    server.broken = True
    proc = ws.cli("run", inputs, "--concurrency", "1", "--watch-spot", "gcp",
                  "--spot-base-url", server.base_url, "--spot-interval", "0.05")  # fmt: skip
    assert proc.popen.returncode == 0, proc.describe()
    assert len(server.requests(GCP_PATH)) >= 3, "polling must go on after an error"
    notes = [line for line in proc.stderr.splitlines() if "spot watch" in line]
    assert len(notes) == 1, proc.stderr
    assert "HTTP 503: metadata service unavailable" in notes[0]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--watch-spot", "azure"], {}, "--watch-spot must be aws, gcp or an http:// or"),
        ([], {"DURABATCH_WATCH_SPOT": "ftp://x"}, "--watch-spot must be aws, gcp"),
        (["--watch-spot", "aws", "--spot-base-url", "169.254.169.254"], {}, "--spot-base-url"),
        (["--watch-spot", "gcp", "--spot-interval", "0"], {}, "--spot-interval must be more"),
    ],
)
def test_a_bad_spot_setting_is_a_usage_error(
    ws: Workspace, args: list[str], env: dict[str, str], message: str
) -> None:
    notes_folder(ws.root, 1)
    proc = ws.cli("run", "in", *args, env=env)
    assert proc.popen.returncode == 2, proc.describe()
    assert message in proc.stderr
    assert ws.run_ids() == [], "a usage error starts no run"
    resumed = ws.cli("resume", *args, env=env)
    assert resumed.popen.returncode == 2, resumed.describe()
    assert message in resumed.stderr


# -- the watcher itself, in this process, against the same server ---------------------------


class Watch:
    """A real SpotWatcher whose drain and note land in lists."""

    def __init__(self, source: spot.Source, interval: float) -> None:
        self.drains: list[str] = []
        self.notes: list[str] = []
        self.watcher = spot.SpotWatcher(source, interval, self.drains.append, self.notes.append)

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what}: not within {timeout}s; {self.notes}"
            time.sleep(0.01)


def test_an_odd_aws_notice_still_drains_and_the_watch_then_ends(server: MetadataServer) -> None:
    server.aws_body = "  <html>terminate\n\n soon</html> "
    server.notice = True
    watch = Watch(spot.make_source("AWS", server.base_url), 0.02)
    watch.watcher.start()
    try:
        watch.until(lambda: bool(watch.drains), "a drain")
        assert watch.drains == ["spot notice: <html>terminate soon</html>"]
        polls = len(server.requests(AWS_PATH))
        time.sleep(0.3)  # fifteen intervals
        assert len(server.requests(AWS_PATH)) == polls, "no polling after the notice"
        assert watch.drains == ["spot notice: <html>terminate soon</html>"]
    finally:
        watch.watcher.stop()


def test_each_outage_is_noted_once_and_the_recovery_too(server: MetadataServer) -> None:
    url = server.base_url + URL_PATH
    watch = Watch(spot.make_source(url, None), 0.02)

    def polled(count: int) -> Callable[[], bool]:
        return lambda: len(server.requests(URL_PATH)) >= count

    server.broken = True
    watch.watcher.start()
    try:
        watch.until(polled(5), "five failed polls")
        server.broken = False
        watch.until(lambda: len(watch.notes) == 2, "the recovery note")
        server.broken = True
        watch.until(polled(len(server.requests(URL_PATH)) + 5), "five more failed polls")
        assert len(watch.notes) == 3, watch.notes
        assert watch.notes[0].startswith(f"spot watch: cannot read {url} (SpotError: HTTP 503")
        assert watch.notes[1] == f"spot watch: {url} answers again"
        assert watch.notes[2].startswith(f"spot watch: cannot read {url}")
        assert watch.drains == []
    finally:
        watch.watcher.stop()


def test_stop_ends_the_watch_at_once(server: MetadataServer) -> None:
    watch = Watch(spot.make_source("gcp", server.base_url), 30)
    watch.watcher.start()
    watch.until(lambda: len(server.requests(GCP_PATH)) == 1, "the first poll")
    began = time.monotonic()
    watch.watcher.stop()
    assert time.monotonic() - began < 5, "stop must not wait out the 30 s interval"
    assert not watch.watcher.running
    server.notice = True
    time.sleep(0.2)
    assert (watch.drains, len(server.requests(GCP_PATH))) == ([], 1)
