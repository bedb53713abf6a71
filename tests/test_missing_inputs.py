"""A resume that finds none of the unfinished documents (their disk not mounted yet, their
folder moved) halts and fails none of them; once they are back, the run goes on."""

from __future__ import annotations

import signal
from pathlib import Path

from crashkit import EventLog, Workspace, of_type, signal_when

DOCS = 300  # far more than run in the moment the SIGTERM takes to land


def interrupted_run(ws: Workspace) -> tuple[Path, str]:
    """A run over ``inbox`` stopped by SIGTERM after two documents: its folder and id."""
    folder = ws.root / "inbox"
    folder.mkdir()
    for n in range(DOCS):
        (folder / f"note_{n:02d}.txt").write_text(f"Note {n}: Alice Morgan met the board.")
    proc = ws.spawn("run", "inbox", "--concurrency", "1")
    signal_when(proc, EventLog(ws.db), lambda e: len(of_type(e, "document_finished")) >= 2,
                signal.SIGTERM)  # fmt: skip
    assert proc.wait(60) == 75, proc.describe()
    [run_id] = ws.run_ids()
    return folder, run_id


def test_a_missing_input_folder_halts_the_resume_and_fails_nothing(ws: Workspace) -> None:
    folder, run_id = interrupted_run(ws)
    left = ws.status(run_id)["documents"]
    assert left["pending"] + left["running"] > 1, left

    folder.rename(ws.root / "elsewhere")  # the volume is not mounted yet
    halted = ws.cli("resume")
    assert halted.popen.returncode == 3, halted.describe()
    assert f"documents of run {run_id} still to extract can be found" in halted.stderr
    assert "durabatch cancel" in halted.stderr
    status = ws.status(run_id)
    assert status["status"] == "halted"
    assert status["documents"]["failed"] == 0

    (ws.root / "elsewhere").rename(folder)
    resumed = ws.cli("resume")
    assert resumed.popen.returncode == 0, resumed.describe()
    assert ws.status(run_id)["documents"]["done"] == DOCS
    assert ws.verify(run_id).popen.returncode == 0


def test_one_missing_document_is_that_documents_failure(ws: Workspace) -> None:
    folder, run_id = interrupted_run(ws)
    (folder / f"note_{DOCS - 1:02d}.txt").unlink()  # the last one, never started
    resumed = ws.cli("resume")
    assert resumed.popen.returncode == 1, resumed.describe()
    documents = ws.status(run_id)["documents"]
    assert (documents["done"], documents["failed"]) == (DOCS - 1, 1)


def test_documents_past_extract_need_no_file_and_do_not_halt_a_resume(ws: Workspace) -> None:
    from fakeapi import FakeAPI, model_not_found

    folder = ws.root / "inbox"
    folder.mkdir()
    for n in range(3):
        (folder / f"note_{n}.txt").write_text(f"Note {n}: Alice Morgan met the board.")
    with FakeAPI() as api:
        api.on(lambda r: (r["json"] or {}).get("model") == "nosuch", model_not_found("nosuch"))
        args = ["--provider", "openai", "--base-url", api.base_url,
                "--summarize-model", "gpt-5.4-mini", "--entities-model", "nosuch"]  # fmt: skip
        halted = ws.cli("run", "inbox", *args)
        assert halted.popen.returncode == 3, halted.describe()
        [run_id] = ws.run_ids()
        folder.rename(ws.root / "elsewhere")  # gone, but every text is extracted already
        fixed = ws.cli("resume", run_id, "--entities-model", "gpt-5.4-mini")
        assert fixed.popen.returncode == 0, fixed.describe()
    assert ws.status(run_id)["documents"]["done"] == 3
