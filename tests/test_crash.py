"""Crashes for real: SIGKILL and SIGTERM on `durabatch` subprocesses, then resume.

Every test runs the installed console script on a real SQLite file in tmp_path, watches
the events from outside (read-only, every 10 ms) and signals the process at a precise
moment. Slow moments are made with HTML pages of millions of tags: parsing them takes
seconds, their text is short. The sample documents include a broken PDF, so a finished
run exits 1.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from crashkit import (
    NOT_FINISHED,
    Event,
    EventLog,
    Workspace,
    alive,
    children_of,
    comparable,
    completed_more_than_once,
    doc_ids,
    has_step_event,
    long_text_inputs,
    note_text,
    of_type,
    query,
    session_of,
    sigkill_when,
    signal_when,
    slow_html,
    standard_inputs,
    wait_for_text,
)
from fixtures_docs import encrypted_pdf, image_pdf, text_pdf

SLOW = "in/m_slow.html"
LAST = "in/zz_last.html"
BROKEN = "in/damaged_report.pdf"
STANDARD_DOCS = 16  # 9 samples + 5 notes + the slow page + the last page
FAILED = 1  # exit code: finished, some documents failed (the broken sample PDF)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The export of one uninterrupted run over the standard inputs."""
    workspace = Workspace(tmp_path_factory.mktemp("baseline"))
    try:
        proc = workspace.cli("run", standard_inputs(workspace.root))
        assert proc.popen.returncode == FAILED, proc.describe()
        export = workspace.export(proc.stdout.splitlines()[0])
    finally:
        workspace.cleanup()
    assert len(export) == STANDARD_DOCS
    assert {p: r["status"] for p, r in export.items() if r["status"] != "done"} == {
        BROKEN: "failed"
    }
    return comparable(export)


# -- helpers ----------------------------------------------------------------------------


def assert_no_step_ran_after_it_committed(events: list[Event]) -> None:
    """Finished means finished: one step_completed per step, and no start after it."""
    assert completed_more_than_once(events) == {}
    for done in of_type(events, "step_completed"):
        again = [
            e for e in of_type(events, "step_started", after=done.seq)
            if (e.doc_id, e.step) == (done.doc_id, done.step)
        ]  # fmt: skip
        assert again == [], f"{done.step} of doc {done.doc_id} started again after committing"


def assert_finished_like_baseline(
    ws: Workspace, run_id: str, baseline: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    assert comparable(ws.export(run_id)) == baseline
    assert_no_step_ran_after_it_committed(ws.events())
    verify = ws.verify(run_id)
    assert verify.popen.returncode == 0, verify.describe()
    status = ws.status(run_id)
    assert status["status"] == "done"
    return status


def epoch_of(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


# -- 1. kill -9 at several moments, then resume -------------------------------------------


def _started(path: str, step: str) -> Callable[[list[Event]], bool]:
    return lambda events: has_step_event(events, "step_started", path, step)


KILL_WHEN: dict[str, Callable[[list[Event]], bool]] = {
    "mid_extract": _started(SLOW, "extract"),
    "between_steps": lambda events: len(of_type(events, "step_completed")) >= 6,
    "last_document": _started(LAST, "extract"),
}


def _kill_early(ws: Workspace, point: str, inputs: str) -> None:
    proc = ws.spawn("run", inputs, "--concurrency", "1")
    if point == "db_created":
        deadline = time.monotonic() + 30
        while not ws.db.exists() and proc.popen.poll() is None:
            assert time.monotonic() < deadline, "the database file never appeared"
            time.sleep(0.001)
    proc.popen.kill()
    assert proc.wait() == -signal.SIGKILL, proc.describe()


def _assert_kill_landed(point: str, events: list[Event]) -> None:
    """The kill happened where the test meant it to, not after the run had finished."""
    assert of_type(events, "session_ended") == []
    finished = {e.doc_id for e in of_type(events, "document_finished")}
    ids = doc_ids(events)
    if point == "mid_extract":
        assert not has_step_event(events, "step_completed", SLOW, "extract")
        assert ids[SLOW] not in finished
    elif point == "between_steps":
        assert 6 <= len(of_type(events, "step_completed")) < 3 * (STANDARD_DOCS - 1)
    elif point == "last_document":
        assert not has_step_event(events, "step_completed", LAST, "extract")
        assert finished == set(ids.values()) - {ids[LAST]}


@pytest.mark.parametrize(
    "point", ["before_start", "db_created", "mid_extract", "between_steps", "last_document"]
)
def test_sigkill_then_resume_equals_an_uninterrupted_run(
    ws: Workspace, baseline: dict[str, dict[str, Any]], point: str
) -> None:
    inputs = standard_inputs(ws.root)
    if point in ("before_start", "db_created"):
        _kill_early(ws, point, inputs)
    else:
        proc = ws.spawn("run", inputs, "--concurrency", "1")
        _assert_kill_landed(point, sigkill_when(proc, EventLog(ws.db), KILL_WHEN[point]))
    killed = ws.run_ids()
    # an early kill lands wherever the process got to: before the database, after it but
    # before the run, after the run but before its session started (nothing was in flight
    # to lose), or inside the session; the dead process's events say which
    lost = of_type(ws.events(), "session_started") != []
    assert lost or point in ("before_start", "db_created")

    resume = ws.cli("resume")
    if killed:
        # the kernel released the dead owner's lock: no waiting for the lease to expire
        assert resume.popen.returncode == FAILED, resume.describe()
    else:
        if ws.db.exists():
            assert resume.popen.returncode == 0, resume.describe()
            assert "nothing to resume" in resume.stderr
        else:  # killed before it created the database: nothing at all to resume
            assert resume.popen.returncode == 2, resume.describe()
            assert "no durabatch database" in resume.stderr
        again = ws.cli("run", inputs, "--concurrency", "1")
        assert again.popen.returncode == FAILED, again.describe()

    [run_id] = ws.run_ids()
    status = assert_finished_like_baseline(ws, run_id, baseline)
    if lost:
        assert status["interruptions"] == 1
        assert [s["outcome"] for s in status["sessions"]] == ["lost", "finished"]
    else:  # no session lost: the one that finished the run is its only session
        assert status["interruptions"] == 0
        assert [s["outcome"] for s in status["sessions"]] == ["finished"]
    if point == "mid_extract":
        events = ws.events()
        slow = doc_ids(events)[SLOW]
        abandoned = [e for e in of_type(events, "step_abandoned") if e.doc_id == slow]
        assert [(e.step, e.data["why"]) for e in abandoned] == [("extract", "owner died")]
        starts = [e.data["attempt"] for e in of_type(events, "step_started")
                  if (e.doc_id, e.step) == (slow, "extract")]  # fmt: skip
        assert starts == [1, 2]


def test_parser_workers_do_not_outlive_a_killed_run(ws: Workspace) -> None:
    proc = ws.spawn("run", standard_inputs(ws.root), "--concurrency", "1")
    log = EventLog(ws.db)
    signal_when(proc, log, _started(SLOW, "extract"), signal.SIGSTOP)
    children = children_of(proc.pid)
    assert children, "the run parses in worker processes"
    proc.popen.kill()
    assert proc.wait() == -signal.SIGKILL
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in children):
        assert time.monotonic() < deadline, f"orphaned workers still running: {children}"
        time.sleep(0.05)


def test_a_parse_longer_than_the_grace_does_not_delay_the_drain(ws: Workspace) -> None:
    folder = ws.root / "in"
    folder.mkdir()
    # waited out, its parse would pass the bound below even on a fast machine (~0.3 s/MB)
    (folder / "huge.html").write_text(slow_html(60, "Huge page."), encoding="utf-8")
    log = EventLog(ws.db)
    proc = ws.spawn("run", "in", "--grace", "1", "--extract-timeout", "600")
    signal_when(proc, log, _started("in/huge.html", "extract"), signal.SIGTERM)
    sent = time.monotonic()
    children = children_of(proc.pid)
    assert proc.wait(60) == NOT_FINISHED, proc.describe()
    assert time.monotonic() - sent < 1 + 10, "the parser must be abandoned when the grace ends"
    deadline = time.monotonic() + 10  # killed at once; the kernel may take a moment to reap
    while any(alive(pid) for pid in children):
        assert time.monotonic() < deadline, "the abandoned parser must be killed"
        time.sleep(0.05)
    events = log.refresh()
    assert has_step_event(events, "step_abandoned", "in/huge.html", "extract")
    [run_id] = ws.run_ids()
    assert ws.verify(run_id).popen.returncode == 0


def test_a_parse_that_ends_within_the_grace_is_committed(ws: Workspace) -> None:
    """SIGTERM while the writer's own parse of a small, slow page is under way: the drain
    waits for it, and its text is committed, not given back (a regression: the last
    parse to end was taken in, then left uncommitted)."""
    folder = ws.root / "in"
    folder.mkdir()
    (folder / "slow.html").write_text(slow_html(0.9, "Slow page."), encoding="utf-8")
    log = EventLog(ws.db)
    proc = ws.spawn("run", "in", "--grace", "60")
    signal_when(proc, log, _started("in/slow.html", "extract"), signal.SIGTERM)
    assert proc.wait(60) == NOT_FINISHED, proc.describe()
    events = log.refresh()
    assert has_step_event(events, "step_completed", "in/slow.html", "extract")
    assert of_type(events, "step_abandoned") == []
    [run_id] = ws.run_ids()
    assert ws.verify(run_id).popen.returncode == 0


def test_resume_after_repeated_sigkills(ws: Workspace, baseline: dict[str, dict[str, Any]]) -> None:
    log = EventLog(ws.db)
    proc = ws.spawn("run", standard_inputs(ws.root))  # default concurrency: several in flight
    sigkill_when(proc, log, lambda events: len(of_type(events, "step_completed")) >= 3)

    def own_session_did(kind: str, pid: int) -> Callable[[list[Event]], bool]:
        def condition(events: list[Event]) -> bool:
            mine = session_of(events, pid)
            if mine is None:
                return False
            if kind == "slow_extract":
                return has_step_event(events, "step_started", SLOW, "extract", after=mine.seq)
            return len(of_type(events, "step_completed", after=mine.seq)) >= 2

        return condition

    for kind in ("slow_extract", "two_steps"):
        proc = ws.spawn("resume")
        events = sigkill_when(proc, log, own_session_did(kind, proc.pid))
        assert of_type(events, "session_ended") == []

    final = ws.cli("resume")
    assert final.popen.returncode == FAILED, final.describe()
    [run_id] = ws.run_ids()
    status = assert_finished_like_baseline(ws, run_id, baseline)
    assert status["interruptions"] == 3
    assert [s["outcome"] for s in status["sessions"]] == ["lost", "lost", "lost", "finished"]


# -- 2. SIGTERM: drain within the grace; a second signal leaves at once ---------------------

GRACE = 2.0
LONG = "in/m_long.txt"


def _summarizing_long(events: list[Event]) -> bool:
    """The long text is inside its summary: a few of its chunks are checkpointed."""
    doc = doc_ids(events).get(LONG)
    saved = [e for e in of_type(events, "partial_saved") if e.doc_id == doc]
    return len([e for e in saved if e.step == "summarize"]) >= 3


def _assert_resumes_to_the_end(ws: Workspace, run_id: str) -> dict[str, Any]:
    resume = ws.cli("resume", run_id)
    assert resume.popen.returncode == FAILED, resume.describe()
    verify = ws.verify(run_id)
    assert verify.popen.returncode == 0, verify.describe()
    events = ws.events()
    assert_no_step_ran_after_it_committed(events)
    # a chunk checkpointed before the signal is not summarized again after it
    long_doc = doc_ids(events)[LONG]
    chunks = [e.data["index"] for e in of_type(events, "partial_saved")
              if (e.doc_id, e.step) == (long_doc, "summarize")]  # fmt: skip
    assert sorted(chunks) == list(range(len(chunks)))
    export = ws.export(run_id)
    assert len(export) == 10
    assert {p: (r["status"], r["reason"]) for p, r in export.items() if r["status"] != "done"} == {
        BROKEN: ("failed", "malformed")
    }
    assert export[LONG]["summary"]
    status = ws.status(run_id)
    assert status["status"] == "done"
    assert status["interruptions"] >= 1
    return status


def test_sigterm_drains_within_the_grace_then_resume_finishes(ws: Workspace) -> None:
    log = EventLog(ws.db)
    inputs = long_text_inputs(ws.root)
    proc = ws.spawn("run", inputs, "--concurrency", "1", "--grace", str(GRACE))
    events = signal_when(proc, log, _summarizing_long, signal.SIGTERM)
    sent, mark = time.monotonic(), events[-1].seq

    assert proc.wait(GRACE + 30) == NOT_FINISHED, proc.describe()
    assert time.monotonic() - sent < GRACE + 15
    [run_id] = ws.run_ids()
    assert "SIGTERM: finishing in-flight steps" in proc.stderr
    assert f"durabatch resume {run_id}" in proc.stderr
    assert "Traceback" not in proc.stderr

    after = [e for e in ws.events() if e.seq > mark]
    assert of_type(after, "step_started") == [], "no new step may start during a drain"
    ends = [e for e in after if e.doc_id == doc_ids(events)[LONG] and e.step == "summarize"
            and e.type in ("step_abandoned", "step_completed", "step_failed")]  # fmt: skip
    assert [e.type for e in ends] in (["step_abandoned"], ["step_completed"])
    if ends[0].type == "step_abandoned":
        assert ends[0].data["why"] == "shutdown"
    [ended] = of_type(after, "session_ended")
    assert ended.data["outcome"] == "interrupted: SIGTERM"
    status = ws.status(run_id)
    assert (status["status"], status["interruptions"]) == ("interrupted", 1)
    assert status["documents"]["running"] == 0
    assert status["owner"] is None
    verify = ws.verify(run_id)
    assert verify.popen.returncode == 0, verify.describe()

    status = _assert_resumes_to_the_end(ws, run_id)
    assert [s["outcome"] for s in status["sessions"]] == ["interrupted: SIGTERM", "finished"]


def test_second_sigterm_exits_at_once_and_the_run_still_resumes(ws: Workspace) -> None:
    log = EventLog(ws.db)
    proc = ws.spawn("run", long_text_inputs(ws.root), "--concurrency", "1", "--grace", "60")
    signal_when(proc, log, _summarizing_long, signal.SIGTERM)
    wait_for_text(proc, "SIGTERM: finishing in-flight steps")
    # no pause: the drain is marked before the note is printed, so this is a second signal
    proc.popen.send_signal(signal.SIGTERM)
    sent = time.monotonic()

    assert proc.wait(60) == NOT_FINISHED, proc.describe()
    assert time.monotonic() - sent < 10, "a second signal must not wait out the 60 s grace"
    assert "second signal" in proc.stderr
    assert "Traceback" not in proc.stderr
    events = log.refresh()
    # it left without draining: no session end, and the long summary never committed
    assert of_type(events, "session_ended") == []
    assert not has_step_event(events, "step_completed", LONG, "summarize")
    [run_id] = ws.run_ids()
    verify = ws.verify(run_id)
    assert verify.popen.returncode == 0, verify.describe()

    status = _assert_resumes_to_the_end(ws, run_id)
    assert [s["outcome"] for s in status["sessions"]] == ["lost", "finished"]


def test_signals_while_parsing_leave_the_documents_unharmed(ws: Workspace) -> None:
    """Two SIGTERMs while four parsers are busy: exit 75, no traceback, nothing failed."""
    folder = ws.root / "in"
    folder.mkdir()
    for i in range(4):
        (folder / f"slow_{i}.html").write_text(slow_html(1, f"Page {i}."), encoding="utf-8")
    log = EventLog(ws.db)
    # regression: the drain used to race the parser threads for the workers' pipes (exit 1,
    # a traceback, healthy documents failed `malformed`); it lost about 4 times in 5
    for _ in range(3):
        mark = log.refresh()[-1].seq if log.events else 0
        proc = ws.spawn("run", "in", "--grace", "60")
        signal_when(
            proc, log, lambda ev, m=mark: len(of_type(ev, "step_started", after=m)) >= 4,
            signal.SIGTERM,
        )  # fmt: skip
        wait_for_text(proc, "SIGTERM: finishing in-flight steps")
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait(60) == NOT_FINISHED, proc.describe()
        assert "Traceback" not in proc.stderr
        assert of_type(log.refresh(), "step_failed") == []
        for run_id in ws.run_ids():
            assert ws.status(run_id)["documents"]["failed"] == 0


def test_a_drain_does_not_start_the_parses_queued_behind_those_under_way(
    ws: Workspace,
) -> None:
    """SIGTERM while slow pages wait for the parser processes (more pages in flight than
    processes, a 60 s grace): the parses under way finish and commit; those queued behind
    them are given back without being started (the drain used to parse every one of
    them), and resume extracts them."""
    pages = (os.cpu_count() or 1) + 4  # a parser process a core: four pages must queue
    folder = ws.root / "in"
    folder.mkdir()
    for i in range(pages):
        (folder / f"slow_{i}.html").write_text(slow_html(2, f"Page {i}."), encoding="utf-8")
    log = EventLog(ws.db)
    proc = ws.spawn("run", "in", "--concurrency", str(pages), "--grace", "60")
    signal_when(proc, log, lambda events: len(of_type(events, "step_started")) >= pages,
                signal.SIGTERM)  # fmt: skip
    assert proc.wait(120) == NOT_FINISHED, proc.describe()
    assert "Traceback" not in proc.stderr
    events = log.refresh()
    extracted = [e for e in of_type(events, "step_completed") if e.step == "extract"]
    given_back = [e for e in of_type(events, "step_abandoned")
                  if "was not started" in e.data["why"]]  # fmt: skip
    assert given_back, "a parse queued when the drain began was started"
    assert len(extracted) + len(given_back) == pages
    assert of_type(events, "step_failed") == []
    [run_id] = ws.run_ids()
    resumed = ws.cli("resume", run_id)
    assert resumed.popen.returncode == 0, resumed.describe()
    assert ws.status(run_id)["documents"]["done"] == pages
    assert ws.verify(run_id).popen.returncode == 0


# -- 3. two resumes at once ---------------------------------------------------------------


def test_second_resume_refuses_while_the_first_owns_the_run(
    ws: Workspace, baseline: dict[str, dict[str, Any]]
) -> None:
    log = EventLog(ws.db)
    proc = ws.spawn("run", standard_inputs(ws.root), "--concurrency", "1")
    killed_at = sigkill_when(proc, log, lambda ev: len(of_type(ev, "step_completed")) >= 3)[-1]
    [run_id] = ws.run_ids()

    # a lease far longer than this test: taking over before it expires proves the third
    # resume did not wait for it, however slowly the steps below go on a loaded machine
    first = ws.spawn("resume", "--concurrency", "1", env={"DURABATCH_LEASE_TTL": "900"})

    def first_owns_it_and_is_busy(events: list[Event]) -> bool:
        mine = session_of(events, first.pid)
        return (
            mine is not None
            and mine.seq > killed_at.seq
            and has_step_event(events, "step_started", SLOW, "extract", after=mine.seq)
        )

    # freeze it mid-step, so "busy" does not depend on how fast this machine parses
    signal_when(first, log, first_owns_it_and_is_busy, signal.SIGSTOP)
    try:
        second = ws.cli("resume")
        assert second.popen.returncode == NOT_FINISHED, second.describe()
        assert str(first.pid) in second.stderr
        assert socket.gethostname() in second.stderr
        assert ws.status(run_id)["owner"]["pid"] == first.pid
        assert query(ws.db, "SELECT id FROM sessions WHERE pid = ?", (second.pid,)) == []
    finally:
        first.popen.kill()
    assert first.wait() == -signal.SIGKILL
    [lease] = query(ws.db, "SELECT lease_pid, lease_expires FROM runs")
    assert lease["lease_pid"] == first.pid

    third = ws.cli("resume")
    assert third.popen.returncode == FAILED, third.describe()
    assert "being processed" not in third.stderr
    took_over = session_of(ws.events(), third.pid)
    assert took_over is not None
    assert epoch_of(took_over.at) < lease["lease_expires"], "it waited for the lease to expire"
    status = assert_finished_like_baseline(ws, run_id, baseline)
    assert status["interruptions"] == 2
    assert [s["outcome"] for s in status["sessions"]] == ["lost", "lost", "finished"]


# -- 4. every bad input kind ----------------------------------------------------------------

MAX_BYTES = 50_000_000  # room for the pathological page
EXTRACT_TIMEOUT = 3  # seconds: the small PDFs take milliseconds, however loaded the machine
SLOW_MB = 40  # far longer than EXTRACT_TIMEOUT to parse, even on a fast machine (~0.3 s/MB)


def _bad_inputs(folder: Path, slow_mb: float) -> None:
    folder.mkdir()
    (folder / "a_good.txt").write_text(note_text(1), encoding="utf-8")
    (folder / "b_good.md").write_text("# Harbour notes\n\n" + note_text(2), encoding="utf-8")
    secret = text_pdf("Board minutes: the Riverton depot sale, 3 March 2025.")
    (folder / "encrypted.pdf").write_bytes(encrypted_pdf(secret, user_password="hunter2"))
    (folder / "scanned.pdf").write_bytes(image_pdf())
    whole = text_pdf("A report that was cut off in transfer. " * 40)
    (folder / "truncated.pdf").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blob.bin").write_bytes(b"\x00\x01" + random.Random(7).randbytes(4096))
    with (folder / "huge.txt").open("wb") as huge:
        huge.write(b"far too long\n")
        huge.truncate(MAX_BYTES + 1)  # its size says too large before anything is read
    (folder / "zz_pathological.html").write_text(slow_html(slow_mb, "Slow."), encoding="utf-8")


BAD_INPUT_OUTCOMES = {
    "in/a_good.txt": ("done", None),
    "in/b_good.md": ("done", None),
    "in/blob.bin": ("skipped", "unsupported_type"),
    "in/empty.txt": ("skipped", "empty"),
    "in/encrypted.pdf": ("failed", "encrypted"),
    "in/huge.txt": ("skipped", "too_large"),
    "in/scanned.pdf": ("failed", "no_text_layer"),
    "in/truncated.pdf": ("failed", "malformed"),
    "in/zz_pathological.html": ("failed", "timeout"),
}


def test_every_bad_input_kind_ends_with_its_reason(ws: Workspace) -> None:
    _bad_inputs(ws.root / "in", slow_mb=SLOW_MB)  # many seconds of parsing, stopped early
    proc = ws.cli(
        "run", "in", "--concurrency", "1", "--extract-timeout", str(EXTRACT_TIMEOUT),
        env={"DURABATCH_MAX_BYTES": str(MAX_BYTES)},
    )  # fmt: skip
    assert proc.popen.returncode == FAILED, proc.describe()
    [run_id] = ws.run_ids()
    export = ws.export(run_id)
    assert {p: (r["status"], r["reason"]) for p, r in export.items()} == BAD_INPUT_OUTCOMES
    for path, (status, _) in BAD_INPUT_OUTCOMES.items():
        row = export[path]
        if status == "done":
            assert row["summary"] and row["entities"] and row["sha256"], row
        else:
            assert row["error"] and row["summary"] is None, row
    assert f"longer than {EXTRACT_TIMEOUT}s" in export["in/zz_pathological.html"]["error"]
    verify = ws.verify(run_id)
    assert verify.popen.returncode == 0, verify.describe()


SLOW_START = 4.0  # seconds each parser process sleeps before its imports


def _slow_starting_parsers(folder: Path) -> dict[str, str]:
    """The environment for a run whose parser processes take SLOW_START seconds longer to
    start (as on a loaded machine or a cold disk): a ``sitecustomize`` that sleeps in
    multiprocessing's spawned children, and only there."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import sys, time\n"
        f"if '--multiprocessing-fork' in sys.argv:\n    time.sleep({SLOW_START})\n",
        encoding="utf-8",
    )
    path = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


def test_a_rerun_answered_from_the_database_starts_no_parser(ws: Workspace) -> None:
    """A second run over the same files finds every text and every answer in the
    database: it needs no parser process, and starts none."""
    folder = ws.root / "in"
    folder.mkdir()
    for i in range(200):  # enough for the run to outlast a parser's start, were one started
        (folder / f"note_{i}.txt").write_text(note_text(i), encoding="utf-8")
    first = ws.cli("run", "in")
    assert first.popen.returncode == 0, first.describe()
    watch = ws.root / "watch"
    watch.mkdir()
    started = ws.root / "parsers_started"
    (watch / "sitecustomize.py").write_text(  # each parser process leaves a mark
        f"import sys\nif '--multiprocessing-fork' in sys.argv:\n"
        f"    open({str(started)!r}, 'a').write('started\\n')\n",
        encoding="utf-8",
    )
    second = ws.cli("run", "in", env={"PYTHONPATH": str(watch)})
    assert second.popen.returncode == 0, second.describe()
    assert {r["status"] for r in ws.export(ws.run_ids()[-1]).values()} == {"done"}
    assert not started.exists(), "a parser process was started for text already at hand"


@pytest.mark.parametrize(
    ("megabytes", "timeout"),
    [(30, SLOW_START / 2), (0.9, 0.15)],
    ids=["on a worker thread", "on the writer's thread"],
)
def test_short_extract_timeout_stops_only_the_slow_document(
    ws: Workspace, megabytes: float, timeout: float
) -> None:
    """Regression: the deadline once counted the parser process's start-up (~0.4 s).

    Here every parser process starts slower than the deadline, and the first good
    document is the first its process parses (with several cores, the next ones too):
    counted, start-up alone would time it out. The deadline still leaves the good
    documents a hundred times their milliseconds of parsing. A file over 1 MiB is extracted
    on a worker thread; a smaller one the writer's thread hands to a parser itself and
    polls between commits: the deadline holds on both paths."""
    folder = ws.root / "in"
    folder.mkdir()
    for i in range(1, 4):
        (folder / f"good_{i}.txt").write_text(note_text(i), encoding="utf-8")
    # longer than the deadline to parse, even on a fast machine (~0.3 s/MB)
    slow = folder / "zz_slow.html"
    slow.write_text(slow_html(megabytes, "Slow."), encoding="utf-8")
    assert (slow.stat().st_size < 1 << 20) == (megabytes < 1)
    env = _slow_starting_parsers(ws.root / "slow_start")
    proc = ws.cli("run", "in", "--extract-timeout", str(timeout), env=env)
    [run_id] = ws.run_ids()
    export = ws.export(run_id)
    assert export["in/zz_slow.html"]["reason"] == "timeout"
    assert {p: r["status"] for p, r in export.items() if p != "in/zz_slow.html"} == {
        f"in/good_{i}.txt": "done" for i in range(1, 4)
    }
    assert proc.popen.returncode == FAILED
    assert "Traceback" not in proc.stderr
