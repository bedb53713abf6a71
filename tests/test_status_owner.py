"""`status` of a run whose process was killed says nobody owns it, not that it runs."""

from __future__ import annotations

from crashkit import EventLog, Workspace, of_type, sigkill_when, slow_html


def test_status_after_a_kill_says_no_process_owns_the_run(ws: Workspace) -> None:
    folder = ws.root / "in"
    folder.mkdir()
    (folder / "slow.html").write_text(slow_html(20, "A slow page."))  # seconds to parse
    proc = ws.spawn("run", "in")
    sigkill_when(proc, EventLog(ws.db), lambda events: of_type(events, "step_started") != [])
    [run_id] = ws.run_ids()

    shown = ws.cli("status", run_id)
    assert shown.popen.returncode == 0, shown.describe()
    flat = " ".join(shown.stdout.split())
    assert "owner │ none alive: `durabatch resume` continues the run" in flat
    assert "gone (not yet taken over)" in flat
    assert ws.status(run_id)["owner"] is None  # the JSON keeps its contract: no owner

    resumed = ws.cli("resume", run_id)
    assert resumed.popen.returncode == 0, resumed.describe()
    flat = " ".join(ws.cli("status", run_id).stdout.split())
    assert "none alive" not in flat and "gone" not in flat
    assert "lost" in flat  # the resume wrote down how the killed session ended
