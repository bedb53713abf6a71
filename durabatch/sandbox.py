"""Parsing in worker processes that can be abandoned.

A pathological PDF can spin pypdf for minutes, and a thread cannot be
stopped. So every file is parsed in a long-lived worker process; the caller
waits at most the per-document deadline, and a worker that overstays is
killed and replaced. The same kill ends parsing at once during a drain.
Workers ignore SIGINT and SIGTERM (the parent drains, then kills them) and
exit by themselves if the parent disappears.

A pool reads PDFs with one engine (pypdf or PDFium, ``--pdf-engine``); its
workers import that engine before they say they are ready, so the import is
never counted against a document's deadline.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from durabatch.errors import Cancelled, DocumentError, DocumentSkipped, HaltError, Reason
from durabatch.formats import Extracted, extract_text, load_parsers

PARENT_CHECK_SECONDS = 1.0
# a new worker imports the parsers before it says it is ready; the per-document
# deadline starts only then, so a short --extract-timeout never counts start-up
STARTUP_SECONDS = 120.0
READY = "ready"
STOPPED = (-signal.SIGINT, -signal.SIGTERM)  # exit codes of a process killed by them
SIGNAL_SECONDS = 5.0  # a loaded machine can take a second to run the handler
_spawn = multiprocessing.get_context("spawn")


class _Worker:
    def __init__(self, pdf_engine: str) -> None:
        self.conn, child = _spawn.Pipe()
        self.process: BaseProcess = _spawn.Process(
            target=_serve,
            args=(child, os.getpid(), pdf_engine),
            daemon=True,
            name="durabatch-parser",
        )
        self.process.start()
        child.close()
        self._kill_lock = threading.Lock()
        self.ready = False  # it said so: its imports are done

    def kill(self) -> None:
        """Idempotent and safe from any thread: the drain and a timeout may race here."""
        with self._kill_lock:
            with contextlib.suppress(OSError, ValueError):
                self.process.kill()
                self.process.join(timeout=5)
            self.conn.close()


class ParserPool:
    """Hands each extraction to an idle worker process, under a deadline."""

    def __init__(self, size: int | None = None, *, pdf_engine: str = "pypdf",
                 stopping: threading.Event | None = None) -> None:  # fmt: skip
        """``stopping``: set when the run drains (a signal): a worker that dies while
        starting then died of that signal, not of a failure to start."""
        self.pdf_engine = pdf_engine
        self._stopping = stopping
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._closed = False
        self._at_exit = False
        # parsing is CPU-bound: more processes than cores only makes each start slower
        self._slots = threading.BoundedSemaphore(size or os.cpu_count() or 1)
        self._waiting = 0  # threads blocked in extract for a slot: start does not jump them

    def extract(self, path: str | Path, *, max_bytes: int, timeout: float) -> Extracted:
        """Parse in a worker; the deadline starts when a worker has the file. A parse that
        got its turn only once the run began to stop is not started: a drain waits for
        the parses under way, not for every one queued behind them."""
        with self._lock:
            self._waiting += 1
        try:
            self._slots.acquire()
        finally:
            with self._lock:
                self._waiting -= 1
        parse = self._begin(path, max_bytes, timeout)
        try:
            while (extracted := parse.poll()) is None:
                parse.wait()
        except BaseException:
            parse.abandon()  # (poll has already, when it raised)
            raise
        return extracted

    def start(self, path: str | Path, *, max_bytes: int, timeout: float) -> Parse | None:
        """``extract`` without waiting, for a thread with other work: the parse, which
        that thread polls; None while every worker is busy, or a thread waits in
        ``extract`` for one (it goes first). Nothing is sent to the worker before the
        first poll, and ``Parse.abandon`` gives the worker back unused."""
        if self._waiting or not self._slots.acquire(blocking=False):
            return None
        return self._begin(path, max_bytes, timeout)

    def _begin(self, path: str | Path, max_bytes: int, timeout: float) -> Parse:
        """A parse of ``path`` on a worker, its slot already taken."""
        try:
            if self._stopping is not None and self._stopping.is_set():
                raise Cancelled(f"the run is stopping: parsing {path} was not started")
            return Parse(self, self._checkout(), path, max_bytes, timeout)
        except BaseException:
            self._slots.release()
            raise

    def kill_now(self) -> None:
        """Best effort from a signal handler: never blocks, never raises."""
        for worker in list(self._all):
            with contextlib.suppress(Exception):
                worker.process.kill()

    def close(self) -> None:
        """Kill every worker, busy or idle: used at exit and when a drain's grace ends."""
        with self._lock:
            self._closed = True
            workers, self._all, self._idle = list(self._all), set(), []
        for worker in workers:
            worker.kill()

    def _checkout(self) -> _Worker:
        """An idle worker, or a new one (it says when it is ready: see ``Parse``)."""
        with self._lock:
            if self._closed:
                raise Cancelled("the run is shutting down")
            if self._idle:
                return self._idle.pop()
            worker = _Worker(self.pdf_engine)
            self._all.add(worker)
            if not self._at_exit:
                # registered after multiprocessing's own exit handler, so it runs first:
                # that one joins every child, and ours ignore SIGTERM, so a pool left open
                # by an error would hold the exit up for good
                atexit.register(self.kill_now)
                self._at_exit = True
        return worker

    def _not_started(self, worker: _Worker) -> BaseException:
        """What a worker that died or hung while starting means, once discarded."""
        self._discard(worker)
        if self._closed:
            return Cancelled("the run is shutting down")
        if worker.process.exitcode in STOPPED or self._signalled():
            # a worker ignores SIGINT and SIGTERM only once it runs: one still starting
            # died of a signal sent to the whole process group (Ctrl-C, systemd), which
            # drains the run too; the step runs again, it is not a failure to start
            return Cancelled("a parser process was stopped by a signal while it started")
        return HaltError(
            "a parser process could not start; check free memory and process limits, then resume"
        )

    def _signalled(self) -> bool:
        """Whether the run drains, given a moment: the signal that killed a starting
        worker (SIGINT during its imports can end it with a plain exit code 1) reaches
        the main thread's handler at about the same time."""
        return self._stopping is not None and self._stopping.wait(SIGNAL_SECONDS)

    def _checkin(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        worker.kill()

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()


class Parse:
    """One file on a parser worker. ``poll`` sends it (once the worker is ready: a new one
    imports the parsers first) and returns its text when the reply is there, None
    before; it raises the document's error, or ``Cancelled`` when the pool closed under
    it. The deadline runs from the send: neither a worker's start nor the caller's own
    work before its first poll counts. The worker and its slot go back when it ends."""

    def __init__(self, pool: ParserPool, worker: _Worker, path: str | Path, max_bytes: int,
                 timeout: float) -> None:  # fmt: skip
        self.path = path
        self.conn = worker.conn  # to wait on, with others (multiprocessing.connection.wait)
        self._pool, self._worker = pool, worker
        self._job, self._timeout = (str(path), max_bytes), timeout
        self._sent = self._ended = False
        self.deadline = time.monotonic() + (timeout if worker.ready else STARTUP_SECONDS)

    def poll(self) -> Extracted | None:
        try:
            if not self._worker.ready and not self._started():
                return None
            reply = self._reply()
        except BaseException:
            self._end(keep=False)
            if self._pool._closed:  # the run is stopping: not the document's fault
                raise Cancelled(f"parsing {self.path} was stopped by the shutdown") from None
            raise
        if reply is None:
            return None
        self._end(keep=True)
        return _unpack(reply)

    def wait(self) -> None:
        """Until there is something to poll for, or the deadline."""
        with contextlib.suppress(EOFError, OSError, ValueError):  # poll then tells
            self.conn.poll(max(0.0, self.deadline - time.monotonic()))

    def abandon(self) -> None:
        """Give the worker up: back to the idle ones if it never had the file (its text
        was found without parsing), else killed (its reply would confuse the next parse)."""
        self._end(keep=not self._sent)

    def _started(self) -> bool:
        worker = self._worker
        try:
            if not worker.conn.poll(0):
                if time.monotonic() < self.deadline:
                    return False
                raise self._pool._not_started(worker)  # hung while starting
            worker.ready = worker.conn.recv() == READY
        except (EOFError, OSError):
            pass
        if not worker.ready:
            raise self._pool._not_started(worker)
        return True

    def _reply(self) -> tuple[str, object, object, object] | None:
        worker = self._worker
        try:
            if not self._sent:
                worker.conn.send(self._job)
                self._sent, self.deadline = True, time.monotonic() + self._timeout
            if worker.conn.poll(0):
                reply: tuple[str, object, object, object] = worker.conn.recv()
                return reply
        except (EOFError, OSError) as exc:
            self._pool._discard(worker)
            code = worker.process.exitcode
            raise DocumentError(
                Reason.MALFORMED, f"the parser process died on this file (exit code {code})"
            ) from exc
        if time.monotonic() < self.deadline:
            return None
        raise DocumentError(
            Reason.TIMEOUT,
            f"parsing took longer than {self._timeout:g}s and was stopped; the file may be "
            "pathological - raise --extract-timeout if it is just large",
        )

    def _end(self, *, keep: bool) -> None:
        """Once: the worker back to the idle ones (``keep``) or killed, the slot freed."""
        if self._ended:
            return
        self._ended = True
        if keep:
            self._pool._checkin(self._worker)
        else:
            self._pool._discard(self._worker)
        self._pool._slots.release()


def _unpack(reply: tuple[str, object, object, object]) -> Extracted:
    kind, first, second, third = reply
    if kind == "ok":
        assert isinstance(first, Extracted)
        return first
    if kind == "error":
        error_type = DocumentSkipped if third else DocumentError
        raise error_type(Reason(str(first)), str(second))
    raise DocumentError(Reason.MALFORMED, f"the parser failed on this file: {first}")


def _serve(conn: Connection, parent_pid: int, pdf_engine: str) -> None:
    """Worker process main loop: parse what the parent sends, until it goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    load_parsers(pdf_engine)
    conn.send(READY)
    while True:
        try:
            path, max_bytes = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(_parse(Path(path), max_bytes, pdf_engine))


def _parse(path: Path, max_bytes: int, pdf_engine: str) -> tuple[str, object, object, object]:
    try:
        return ("ok", extract_text(path, max_bytes=max_bytes, pdf_engine=pdf_engine), None, None)
    except DocumentError as exc:
        return ("error", str(exc.reason), exc.message, exc.skipped)
    except Exception as exc:  # a parser bug must not kill the worker
        return ("crash", f"{type(exc).__name__}: {exc}", None, None)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)
