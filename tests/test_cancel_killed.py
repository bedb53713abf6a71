"""`cancel` of a run whose process was killed with paid calls in flight: the run is
cancelled at once, and the steps that were in flight are put back, their calls counted
as lost, by the session that takes the run over (as `resume` would) before its
unfinished documents are skipped: no call in flight is dropped from the cost."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from crashkit import EventLog, Workspace, of_type, query, signal_when
from fakeapi import FakeAPI

MODEL = "gpt-5.4-mini"


@pytest.fixture
def ws(tmp_path: Path) -> Any:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(12):
        (folder / f"doc_{n:02d}.txt").write_text(f"DOC-{n} The harbour board met in May.")
    (tmp_path / "prices.toml").write_text(f'[prices."{MODEL}"]\ninput = 10\noutput = 10\n')
    workspace = Workspace(tmp_path)
    yield workspace
    workspace.cleanup()


def test_cancel_of_a_killed_run_counts_its_calls_in_flight_as_lost(
    ws: Workspace,
) -> None:
    with FakeAPI(latency=30.0) as api:  # answers never come before the kill
        proc = ws.spawn("run", "in", "--provider", "openai", "--base-url", api.base_url,
                        "--model", MODEL, "--prices", "prices.toml", "--max-cost", "5",
                        "--concurrency", "4")  # fmt: skip
        log = EventLog(ws.db)
        signal_when(proc, log, lambda e: len(api.completions()) >= 4, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL, proc.describe()
        [run_id] = ws.run_ids()
        held = query(ws.db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"]
        assert held >= 4  # the calls in flight, written down before they were sent

        cancelled = ws.cli("cancel", run_id)
        assert cancelled.popen.returncode == 0, cancelled.describe()
    status = ws.status(run_id)
    assert status["status"] == "cancelled"
    # cancel took the run over as resume would: the steps in flight were put back (their
    # calls counted as lost, never dropped), then every unfinished document was skipped
    assert status["documents"]["running"] == status["documents"]["pending"] == 0
    assert query(ws.db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0
    lost = query(ws.db, "SELECT COUNT(*) AS n FROM model_calls WHERE kept = 0"
                        " AND error_class = 'LostInFlight'")[0]["n"]  # fmt: skip
    assert lost == held
    assert query(ws.db, "SELECT COUNT(*) AS n FROM steps WHERE status = 'running'")[0]["n"] == 0
    assert of_type(ws.events(), "session_lost") != []
    assert ws.verify(run_id).popen.returncode == 0
