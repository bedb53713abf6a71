"""A file that changed between a run and its resume is read again, with an event saying so."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path
from typing import Any

from crashkit import EventLog, Workspace, of_type, query, signal_when
from fakeapi import FakeAPI

MODEL = ["--provider", "openai", "--model", "gpt-5.4-mini", "--price-provider", "gmi"]


def test_a_file_changed_before_resume_is_extracted_and_summarized_again(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for n in range(1, 4):
        (tmp_path / "in" / f"d{n}.txt").write_text(f"DOC-{n} The old budget was approved.")
    ws = Workspace(tmp_path, extra_env={"DURABATCH_API_KEY": "sk-test"})
    try:
        with FakeAPI(latency=1.0) as api:
            args = ["run", "in", *MODEL, "--base-url", api.base_url, "--concurrency", "1"]
            proc = ws.spawn(*args)
            log = EventLog(ws.db)

            def d2_read(events: list[Any]) -> bool:  # d2's text is taken, its summary not yet
                return any(e.step == "extract" and e.doc_id == 2
                           for e in of_type(events, "step_completed"))  # fmt: skip

            signal_when(proc, log, d2_read, signal.SIGKILL)
            proc.wait(30)
            [run_id] = ws.run_ids()
            new = b"DOC-2 The NEW budget was rejected."
            (tmp_path / "in" / "d2.txt").write_bytes(new)
            resumed = ws.cli("resume", run_id)
            asked = [r["json"]["messages"][-1]["content"] for r in api.completions()]
        exported = ws.export(run_id)
        events = ws.events()
        verified = ws.verify(run_id)
    finally:
        ws.cleanup()
    assert resumed.popen.returncode == 0, resumed.describe()
    assert "in/d2.txt changed since it was read: starting over" in resumed.stderr
    [changed] = of_type(events, "document_changed")
    assert changed.doc_id == 2
    assert changed.data["new_sha256"] == hashlib.sha256(new).hexdigest()
    assert changed.data["old_sha256"] != changed.data["new_sha256"]
    row = exported["in/d2.txt"]
    assert row["sha256"] == hashlib.sha256(new).hexdigest()
    assert "NEW budget" in row["summary"] and row["status"] == "done"
    about_d2 = [text for text in asked if text.startswith("DOC-2")]
    assert "NEW budget" in about_d2[-1] and "NEW budget" in about_d2[-2]  # both model steps
    assert verified.popen.returncode == 0, verified.describe()
    unchanged = query(ws.db, "SELECT COUNT(*) AS n FROM events WHERE type = 'document_changed'")
    assert unchanged[0]["n"] == 1  # d1 and d3 were not touched, so not redone


def test_an_unchanged_file_still_reuses_earlier_answers_after_a_resume(tmp_path: Path) -> None:
    """The check on resume must not cost the cache: run 1 answers every document; run 2
    (with --no-cache, which is not kept with the run) is killed once its texts are read,
    and its resume, allowed the cache again, pays for nothing."""
    (tmp_path / "in").mkdir()
    for n in range(1, 5):
        (tmp_path / "in" / f"d{n}.txt").write_text(f"DOC-{n} The budget was approved.")
    ws = Workspace(tmp_path, extra_env={"DURABATCH_API_KEY": "sk-test"})
    try:
        with FakeAPI(latency=1.0) as api:
            args = ["run", "in", *MODEL, "--base-url", api.base_url, "--concurrency", "4"]
            assert ws.cli(*args).popen.returncode == 0
            proc = ws.spawn(*args, "--no-cache")
            log = EventLog(ws.db)

            def texts_read(events: list[Any]) -> bool:
                second = [e for e in of_type(events, "step_completed") if e.run_id != first]
                return sum(e.step == "extract" for e in second) == 4 and api.answering > 0

            [first] = ws.run_ids()
            signal_when(proc, log, texts_read, signal.SIGKILL)
            proc.wait(30)
            api.wait_idle()  # what the dead process sent is logged now, not during the resume
            second = ws.run_ids()[1]
            paid = len(api.completions())
            resumed = ws.cli("resume", second)
            repaid = len(api.completions()) - paid
        verified = ws.verify(second)
    finally:
        ws.cleanup()
    assert resumed.popen.returncode == 0, resumed.describe()
    assert repaid == 0
    assert verified.popen.returncode == 0
    rows = query(ws.db, "SELECT COUNT(*) AS n FROM steps s JOIN documents d ON d.id = s.doc_id"
                 " WHERE d.run_id = ? AND s.step != 'extract' AND s.cached_from LIKE ?",
                 [second, f"{first}:%"])  # fmt: skip
    assert rows[0]["n"] == 8
