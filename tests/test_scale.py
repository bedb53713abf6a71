"""Large runs: discovery streams into the work, and `compact` folds the event history.

Real `durabatch` subprocesses on real SQLite files, watched from outside read-only. No
timing is asserted (the figures are bench/scale.py's job): only the order of events and
that every document ends exactly once.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest
from crashkit import (
    NOT_FINISHED,
    Event,
    EventLog,
    Workspace,
    completed_more_than_once,
    of_type,
    query,
    signal_when,
    slow_html,
    standard_inputs,
)

from durabatch import discovery
from durabatch.events import State, replay
from durabatch.store import open_store

# enough files that the walk lasts several discovery batches (of at most 500, or 50 ms)
MANY = 2_000
FOLDERS = 20
# files the globs leave out, between the notes: they make the walk last about 2 s here
# (2,000 notes alone were walked in 0.23 s, and a loaded CI machine once saw the walk end
# before the test's kill landed), while the run still processes only the notes
SKIPPED_PER_FOLDER = 1_500
FAILED = 1  # exit code: finished, some documents failed (the broken sample PDF)


def many_notes(root: Path, count: int = MANY) -> str:
    """``count`` notes in ``FOLDERS`` folders, each beside files ``--exclude '*.skip'``
    leaves out."""
    for i in range(count):
        folder = root / "many" / f"d{i % FOLDERS:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"n{i:05d}.txt").write_text(f"Note {i}: Alice Morgan met the board.\n")
    for f in range(FOLDERS):
        for i in range(SKIPPED_PER_FOLDER):
            (root / "many" / f"d{f:02d}" / f"s{i:05d}.skip").write_bytes(b"")
    return "many"


def _every_document_done_once(ws: Workspace, run_id: str, count: int) -> None:
    events = ws.events()
    discovered = Counter(e.data["path"] for e in of_type(events, "document_discovered"))
    assert len(discovered) == count and set(discovered.values()) == {1}
    assert completed_more_than_once(events) == {}
    assert len(of_type(events, "step_completed")) == 3 * count
    assert len(of_type(events, "discovery_finished")) == 1
    assert ws.status(run_id)["documents"]["done"] == count
    assert ws.verify(run_id).popen.returncode == 0


# its own waits (the walk, then a resume of 2,000 notes given 110 s) near the 120 s default
@pytest.mark.timeout(300)
def test_steps_start_while_discovery_goes_on_and_a_killed_walk_resumes(
    ws: Workspace,
) -> None:
    """The first step is claimed (committed with its event) while the walk is still
    finding files; a kill -9 then leaves the run undiscovered, and resume walks again,
    adds only what is new, and finishes every document exactly once."""
    inputs = many_notes(ws.root)
    proc = ws.spawn("run", inputs, "--exclude", "*.skip")
    log = EventLog(ws.db)

    def walking_after_the_first_step(events: list[Event]) -> bool:
        started = of_type(events, "step_started")
        return bool(started and of_type(events, "document_discovered", after=started[0].seq))

    signal_when(proc, log, walking_after_the_first_step)
    proc.wait()
    assert not of_type(ws.events(), "discovery_finished"), "the walk was over before"
    (run_id,) = ws.run_ids()
    assert query(ws.db, "SELECT discovered FROM runs")[0][0] == 0
    resumed = ws.cli("resume", run_id, timeout=110)
    assert resumed.popen.returncode == 0, resumed.describe()
    _every_document_done_once(ws, run_id, MANY)


@pytest.mark.timeout(300)  # the run alone is given 120 s, the default for a whole test
def test_a_long_stretch_of_excluded_files_does_not_hold_back_the_found_ones(
    ws: Workspace,
) -> None:
    """The walk hands control back while it passes over files the globs leave out: the
    document found before 20,000 excluded files is claimed before the one after them is
    even found (before, both were added together once the stretch was walked)."""
    inputs = ws.root / "in"
    (inputs / "m").mkdir(parents=True)
    (inputs / "a.txt").write_text("Alice Morgan met the board of Northwind in Rotterdam.\n")
    for i in range(20_000):
        (inputs / "m" / f"f{i:05d}.skip").write_bytes(b"")
    (inputs / "z.txt").write_text("Bram de Vries met the board of Acme in Leeds.\n")
    ran = ws.cli("run", "in", "--exclude", "*.skip", timeout=120)
    assert ran.popen.returncode == 0, ran.describe()
    events = ws.events()
    found = {e.data["path"]: e.seq for e in of_type(events, "document_discovered")}
    assert set(found) == {"in/a.txt", "in/z.txt"}
    first_claim = of_type(events, "step_started")[0]
    assert first_claim.doc_id is not None and first_claim.seq < found["in/z.txt"]
    assert ws.verify(ws.run_ids()[0]).popen.returncode == 0


def test_the_walk_yields_none_while_it_passes_over_unwanted_files(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    for i in range(600):
        (folder / f"b{i:03d}.skip").write_text("")
    (folder / "c.txt").write_text("c")
    walked = list(discovery.walk(["in"], tmp_path, exclude=["*.skip"]))
    assert walked.count(None) == 600 // discovery.PASSED
    assert [doc.path for doc in walked if doc is not None] == ["in/a.txt", "in/c.txt"]
    found = list(discovery.discover(["in"], tmp_path, exclude=["*.skip"]))
    assert [doc.path for doc in found] == ["in/a.txt", "in/c.txt"]


def _replayed(ws: Workspace, run_id: str) -> State:
    store = open_store(str(ws.db), create=False)
    try:
        return replay(store.events(run_id))
    finally:
        store.close()


def test_compact_folds_the_events_and_verify_still_holds(ws: Workspace) -> None:
    inputs = standard_inputs(ws.root, slow_mb=0.2, last_mb=0)
    proc = ws.spawn("run", inputs, "--concurrency", "1")
    signal_when(proc, EventLog(ws.db), lambda e: len(of_type(e, "step_completed")) >= 6)
    proc.wait()
    (run_id,) = ws.run_ids()
    # an interrupted run is compacted, then resumed on top of its snapshot
    first = ws.cli("compact", run_id, "--json")
    assert first.popen.returncode == 0, first.describe()
    assert [e.type for e in ws.events()] == ["snapshot"]
    sizes = json.loads(first.stdout)
    # without --vacuum the file keeps its freed pages, but it never seems to grow (the
    # rewritten pages are checkpointed out of the WAL before the size is taken)
    assert sizes["bytes_after"] <= sizes["bytes_before"], sizes
    assert ws.verify(run_id).popen.returncode == 0
    resumed = ws.cli("resume", run_id)
    assert resumed.popen.returncode == FAILED, resumed.describe()
    before = _replayed(ws, run_id)
    count = len(ws.events())
    compacted = ws.cli("compact", run_id, "--vacuum", "--json")
    assert compacted.popen.returncode == 0, compacted.describe()
    assert f'"folded": {count}' in compacted.stdout
    events = ws.events()
    assert [e.type for e in events] == ["snapshot"] and count > 1
    assert events[0].seq == max(e.seq for e in EventLog(ws.db).refresh())
    after = _replayed(ws, run_id)
    assert (after.run, after.documents, after.steps, after.partials, after.anomalies) == (
        before.run, before.documents, before.steps, before.partials, before.anomalies
    )  # fmt: skip
    checked = ws.verify(run_id)
    assert checked.popen.returncode == 0, checked.describe()
    assert "matches the tables" in checked.stdout
    # the history is still append-only outside compaction
    again = ws.cli("compact", run_id)
    assert again.popen.returncode == 0 and "nothing to compact" in again.stdout


def test_compact_refuses_while_a_live_process_owns_a_run_of_the_database(
    ws: Workspace,
) -> None:
    (ws.root / "old").mkdir()
    (ws.root / "old" / "note.txt").write_text("Bob Stone signed the lease in Leeds.")
    assert ws.cli("run", "old").popen.returncode == 0
    (finished,) = ws.run_ids()
    folder = ws.root / "in"
    folder.mkdir()
    (folder / "a_slow.html").write_text(slow_html(3, "Alice Morgan met the board."))
    # a lease far longer than the test: it must not lapse while the run is frozen below;
    # a short grace: the drain at the end need not wait out the page's parse
    proc = ws.spawn("run", "in", "--concurrency", "1", "--grace", "1",
                    env={"DURABATCH_LEASE_TTL": "600"})  # fmt: skip
    # frozen at its first step, so "live" does not depend on how fast this machine parses
    # the page while the two `compact` processes start: alive, with its lock and lease
    signal_when(proc, EventLog(ws.db),
                lambda events: any(e.run_id != finished for e in of_type(events, "step_started")),
                sig=signal.SIGSTOP)  # fmt: skip
    try:
        (run_id,) = set(ws.run_ids()) - {finished}
        # another run's compaction would lock the database for longer than the live run waits
        other = ws.cli("compact", finished)
        assert other.popen.returncode == NOT_FINISHED, other.describe()
        assert f"while run {run_id} of the same database is processed by pid {proc.pid}" in (
            other.stderr
        )
        count = len(ws.events())
        refused = ws.cli("compact", run_id)
        assert refused.popen.returncode == NOT_FINISHED, refused.describe()
        assert f"cannot compact run {run_id} while it is processed by pid {proc.pid}" in (
            refused.stderr
        )
        assert "Traceback" not in refused.stderr
        assert len(ws.events()) >= count and ws.events()[0].type == "run_created"
        proc.popen.send_signal(signal.SIGTERM)  # pending: it drains once it runs again
    finally:
        proc.popen.send_signal(signal.SIGCONT)
    assert proc.wait() == NOT_FINISHED, proc.describe()


def test_status_and_resume_read_by_index_never_a_whole_table(ws: Workspace) -> None:
    """Every statement `status RUN`, the claim of `resume` and the cache lookups run is
    planned on an index (EXPLAIN QUERY PLAN shows no SCAN of a table): their cost follows
    what they return, not the size of the run."""
    from durabatch import reports

    ran = ws.cli("run", standard_inputs(ws.root, slow_mb=0.1, last_mb=0))
    assert ran.popen.returncode in (0, FAILED), ran.describe()
    (run_id,) = ws.run_ids()
    store = open_store(str(ws.db), create=False)
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)  # type: ignore[attr-defined]
    try:
        reports.run_summary(store, store.get_run(run_id))
        store.pending_documents(run_id, 4)  # type: ignore[attr-defined]
        # a re-run over the same files answers every step from the cache
        key, content = query(
            ws.db,
            "SELECT s.cache_key, d.sha256 FROM steps s JOIN documents d"
            " ON d.id = s.doc_id WHERE s.step = 'summarize' LIMIT 1",
        )[0]
        assert store.cached_step(key, content) is not None
        assert key in store.cached_steps([(key, content), ("0" * 64, "1" * 64)])
        store.cached_extraction(key, content)
        store.conn.set_trace_callback(None)  # type: ignore[attr-defined]
        scans, by_content = {}, []
        for sql in {s for s in seen if s.lstrip().upper().startswith("SELECT")}:
            plan = store.conn.execute(  # type: ignore[attr-defined]
                f"EXPLAIN QUERY PLAN {sql}"
            ).fetchall()
            # a SCAN of a subquery's own rows (a CO-ROUTINE) reads no table
            inner = {row[3].split()[1] for row in plan if row[3].startswith("CO-ROUTINE ")}
            found = [row[3] for row in plan
                     if row[3].startswith("SCAN ") and row[3].split()[1] not in inner]  # fmt: skip
            if found:
                scans[sql] = found
            if "cache_key" in sql:  # earlier answers: through their content's hash
                by_content.append(any("documents_content" in row[3] for row in plan))
    finally:
        store.close()
    assert seen and scans == {}
    assert by_content == [True, True, True]  # one answer, two at once, an extraction
