"""The embedded engine's steps on short texts run on the writer's own thread, between
commits (engine._inline). Real runs, real signals: a drain gives back what that thread
had claimed but not started without waiting out the grace, and pieces of a text split by
--max-input-tokens are still saved one by one."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from crashkit import (
    NOT_FINISHED,
    EventLog,
    Workspace,
    completed_more_than_once,
    note_text,
    of_type,
    query,
    sigkill_when,
    signal_when,
)

NOTES = 300


def _notes(root: Path, count: int, chars: int = 0) -> str:
    """``count`` notes, each of one note's text or (``chars``) of as many as fit."""
    folder = root / "notes"
    folder.mkdir()
    for i in range(count):
        text = note_text(i)
        while len(text) + len(note_text(i)) + 1 < chars:
            text += "\n" + note_text(i * 100 + len(text) % 97)
        (folder / f"note_{i:03d}.txt").write_text(text, encoding="utf-8")
    return "notes"


def test_a_drain_gives_back_unstarted_inline_steps_at_once(ws: Workspace) -> None:
    """SIGTERM in the middle of 300 short notes at --concurrency 16 (up to 16 steps
    claimed for the writer's thread at a time): the run stops well inside a 60 s grace,
    nothing is left running, verify passes, and resume finishes every note with no step
    done twice."""
    log = EventLog(ws.db)
    proc = ws.spawn("run", _notes(ws.root, NOTES), "--concurrency", "16", "--grace", "60")
    signal_when(proc, log, lambda events: len(of_type(events, "step_completed")) >= 60,
                signal.SIGTERM)  # fmt: skip
    sent = time.monotonic()
    assert proc.wait(90) == NOT_FINISHED, proc.describe()
    assert time.monotonic() - sent < 30, "steps never started must not wait out the grace"
    assert "Traceback" not in proc.stderr
    [run_id] = ws.run_ids()
    status = ws.status(run_id)
    assert status["status"] == "interrupted"
    assert status["documents"]["running"] == 0
    assert status["documents"]["done"] < NOTES, "the signal came too late to test anything"
    assert ws.verify(run_id).popen.returncode == 0

    resumed = ws.cli("resume", run_id, timeout=120)
    assert resumed.popen.returncode == 0, resumed.describe()
    assert ws.status(run_id)["documents"]["done"] == NOTES
    assert completed_more_than_once(ws.events()) == {}
    assert ws.verify(run_id).popen.returncode == 0


def test_a_short_text_split_into_pieces_saves_each_piece(ws: Workspace) -> None:
    """--max-input-tokens small enough to split a short note: its pieces are saved as
    they are answered (partial_saved events), and the note ends done."""
    proc = ws.cli("run", _notes(ws.root, 2), "--max-input-tokens", "150", timeout=60)
    assert proc.popen.returncode == 0, proc.describe()
    saved = of_type(ws.events(), "partial_saved")
    assert {(e.doc_id, e.step) for e in saved} >= {(1, "summarize"), (2, "summarize")}
    assert [row["status"] for row in query(ws.db, "SELECT status FROM documents")] == [
        "done",
        "done",
    ]
    [run_id] = ws.run_ids()
    assert ws.verify(run_id).popen.returncode == 0


@pytest.mark.parametrize("chars", [15_500, 20_000], ids=["inline", "on-workers"])
def test_many_embedded_steps_at_once_keep_the_lease_alive(ws: Workspace, chars: int) -> None:
    """A resume at --concurrency 1024 of 120 notes, all of them extracted before a
    kill -9, claims their summarize steps at once, each tens of milliseconds of Python.
    Notes of up to 16,000 characters queue on the writer's thread, which stops every
    LOCAL_SLICE to commit and renew the lease; longer ones go to workers, which compute
    one at a time (1,024 of them at once kept the writer waiting for the GIL at every
    statement). The lease (2 s here) never lapses: a lapsed lease tells `cancel` and
    `status` that nobody owns the run."""
    inputs = _notes(ws.root, 120, chars=chars)
    log = EventLog(ws.db)
    first = ws.spawn("run", inputs, "--concurrency", "1024")
    sigkill_when(first, log, lambda events: sum(1 for e in of_type(events, "step_completed")
                                                if e.step == "extract") >= 120)  # fmt: skip
    [run_id] = ws.run_ids()
    assert ws.status(run_id)["documents"]["done"] < 60, "too few left to queue"

    proc = ws.spawn("resume", run_id, "--concurrency", "1024", env={"DURABATCH_LEASE_TTL": "2"})
    lapsed = 0.0
    while proc.popen.poll() is None:
        with contextlib.suppress(sqlite3.Error):  # busy for a moment
            rows = query(ws.db, "SELECT lease_expires FROM runs WHERE lease_expires IS NOT NULL")
            lapsed = max([lapsed, *(time.time() - row[0] for row in rows)])
        time.sleep(0.05)
    assert proc.wait(60) == 0, proc.describe()
    assert lapsed <= 0, f"the lease lapsed for {lapsed:.1f}s while the run was alive"
