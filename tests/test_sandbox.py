"""The parser pool without waiting (``ParserPool.start``): what the run's writer thread
uses to hand small files to the parser processes itself. Real worker processes, real
files; nothing is mocked."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from crashkit import slow_html

from durabatch.errors import Cancelled, DocumentError, Reason
from durabatch.formats import Extracted
from durabatch.sandbox import Parse, ParserPool

MAX_BYTES = 1 << 24


def finish(parse: Parse) -> Extracted:
    while (extracted := parse.poll()) is None:
        parse.wait()
    return extracted


@pytest.fixture
def note(tmp_path: Path) -> Path:
    path = tmp_path / "note.txt"
    path.write_text("Alice Morgan met the board in Rotterdam.", encoding="utf-8")
    return path


@pytest.fixture
def slow(tmp_path: Path) -> Path:
    path = tmp_path / "slow.html"  # a second or more to parse, a short text
    path.write_text(slow_html(2, "Slow page."), encoding="utf-8")
    return path


def test_a_busy_pool_gives_no_parse_and_the_deadline_starts_once_the_worker_is_ready(
    note: Path,
) -> None:
    """One worker: a second parse waits for the first to end. The new worker takes
    longer to start (its imports) than this deadline: only the parse counts."""
    pool = ParserPool(1)
    try:
        first = pool.start(note, max_bytes=MAX_BYTES, timeout=0.05)
        assert first is not None
        assert pool.start(note, max_bytes=MAX_BYTES, timeout=0.05) is None
        extracted = finish(first)
        assert extracted.text == "Alice Morgan met the board in Rotterdam."
        assert extracted.kind == "text"
        second = pool.start(note, max_bytes=MAX_BYTES, timeout=5)
        assert second is not None and finish(second).sha256 == extracted.sha256
    finally:
        pool.close()


def test_a_parse_past_its_deadline_is_stopped_and_its_worker_replaced(
    note: Path, slow: Path
) -> None:
    pool = ParserPool(1)
    try:
        warm = pool.start(note, max_bytes=MAX_BYTES, timeout=60)
        assert warm is not None
        finish(warm)  # the worker is up: the deadline below is the parse's alone
        parse = pool.start(slow, max_bytes=MAX_BYTES, timeout=0.2)
        assert parse is not None
        with pytest.raises(DocumentError) as caught:
            finish(parse)
        assert caught.value.reason == Reason.TIMEOUT
        assert "longer than 0.2s" in caught.value.message
        again = pool.start(note, max_bytes=MAX_BYTES, timeout=60)
        assert again is not None
        assert finish(again).text.startswith("Alice Morgan")
    finally:
        pool.close()


def test_a_parse_given_up_before_it_was_sent_gives_its_worker_back(note: Path) -> None:
    pool = ParserPool(1)
    try:
        parse = pool.start(note, max_bytes=MAX_BYTES, timeout=60)
        assert parse is not None
        parse.abandon()  # as when the same bytes' text was found in the database
        parse.abandon()  # once only: the slot is not freed twice
        kept = pool.start(note, max_bytes=MAX_BYTES, timeout=60)
        assert kept is not None
        assert pool.start(note, max_bytes=MAX_BYTES, timeout=60) is None
        assert kept.conn is parse.conn  # the same worker, not a new one
        finish(kept)
    finally:
        pool.close()


def test_a_parse_under_way_when_the_pool_closes_ends_cancelled(slow: Path) -> None:
    pool = ParserPool(1)
    parse = pool.start(slow, max_bytes=MAX_BYTES, timeout=60)
    assert parse is not None
    parse.wait()  # until the new worker says it is ready
    assert parse.poll() is None  # sent, not done
    pool.close()
    with pytest.raises(Cancelled, match="stopped by the shutdown"):
        finish(parse)


def test_a_draining_pool_starts_no_parse(note: Path) -> None:
    stopping = threading.Event()
    pool = ParserPool(1, stopping=stopping)
    try:
        stopping.set()
        with pytest.raises(Cancelled, match="was not started"):
            pool.start(note, max_bytes=MAX_BYTES, timeout=60)
        stopping.clear()  # the slot was given back
        parse = pool.start(note, max_bytes=MAX_BYTES, timeout=60)
        assert parse is not None and finish(parse).kind == "text"
    finally:
        pool.close()


def test_the_deadline_runs_from_the_send_not_from_the_start(note: Path) -> None:
    """The caller takes a parse, then does its own work (a commit, a batch of the walk)
    before its first poll, which sends the file: that time is not the parse's."""
    pool = ParserPool(1)
    try:
        warm = pool.start(note, max_bytes=MAX_BYTES, timeout=60)
        assert warm is not None
        finish(warm)  # the worker is up
        parse = pool.start(note, max_bytes=MAX_BYTES, timeout=0.2)
        assert parse is not None
        time.sleep(0.4)
        assert finish(parse).kind == "text"
    finally:
        pool.close()


def test_a_thread_waiting_for_a_worker_goes_before_a_parse_started_without_waiting(
    note: Path, slow: Path
) -> None:
    """A large file's extraction on a worker thread waits for a slot in ``extract``; the
    writer, which starts its parses without waiting, does not take the slot it frees."""
    pool = ParserPool(1)
    try:
        first = pool.start(slow, max_bytes=MAX_BYTES, timeout=60)
        assert first is not None
        done: list[Extracted] = []
        waiter = threading.Thread(
            target=lambda: done.append(pool.extract(note, max_bytes=MAX_BYTES, timeout=60))
        )
        waiter.start()
        time.sleep(0.3)  # it waits for the one worker
        finish(first)
        assert pool.start(note, max_bytes=MAX_BYTES, timeout=60) is None
        waiter.join(60)
        assert done and done[0].kind == "text"
        after = pool.start(note, max_bytes=MAX_BYTES, timeout=60)
        assert after is not None and finish(after).kind == "text"
    finally:
        pool.close()
