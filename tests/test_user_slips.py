"""Slips a careless or unlucky user makes: each is a clear message and a specific exit
code, never a hang, a traceback or a run that quietly does something else."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from crashkit import Workspace, clean_env, durabatch_bin


def docs(ws: Workspace, count: int = 2) -> None:
    folder = ws.root / "in"
    folder.mkdir()
    for n in range(count):
        (folder / f"note_{n}.txt").write_text(f"Note {n}: Alice Morgan met the board.")


def test_a_concurrency_past_the_maximum_is_a_usage_error(ws: Workspace) -> None:
    docs(ws)
    for given, env, named in (
        (["--concurrency", "99999999999999999999"], {}, "--concurrency"),
        ([], {"DURABATCH_CONCURRENCY": "40000"}, "DURABATCH_CONCURRENCY"),
    ):
        proc = ws.cli("run", "in", *given, env=env, timeout=30)
        assert proc.popen.returncode == 2, proc.describe()
        assert f"{named} must be at most 1024" in proc.stderr
    assert ws.run_ids() == []  # refused before any run was made
    ok = ws.cli("run", "in", "--concurrency", "1024")
    assert ok.popen.returncode == 0, ok.describe()


def test_a_negative_price_is_refused(ws: Workspace) -> None:
    docs(ws)
    (ws.root / "prices.toml").write_text('[prices."m"]\ninput = -0.40\noutput = 2.50\n')
    proc = ws.cli("run", "in", "--provider", "openai", "--base-url", "http://127.0.0.1:9/v1",
                  "--model", "m", "--prices", "prices.toml")  # fmt: skip
    assert proc.popen.returncode == 2, proc.describe()
    assert "must be 0 or more dollars per 1M tokens" in proc.stderr
    assert ws.run_ids() == []


def test_a_fifo_named_on_the_command_line_fails_alone_and_never_hangs(ws: Workspace) -> None:
    docs(ws)
    os.mkfifo(ws.root / "in" / "pipe.txt")  # opening it to read waits for a writer
    proc = ws.cli("run", "in/pipe.txt", "in/note_0.txt", timeout=60)
    assert proc.popen.returncode == 1, proc.describe()  # finished, one document failed
    [run_id] = ws.run_ids()
    export = ws.cli("export", run_id)
    records = {r["path"]: r for r in map(json.loads, export.stdout.splitlines())}
    assert records["in/note_0.txt"]["status"] == "done"
    assert records["in/pipe.txt"]["status"] == "failed"
    assert "regular file" in records["in/pipe.txt"]["error"]
    estimate = ws.cli("estimate", "in/pipe.txt", timeout=60)
    assert estimate.popen.returncode == 0, estimate.describe()


def test_a_database_that_cannot_be_created_is_named_with_what_to_do(ws: Workspace) -> None:
    docs(ws)
    target = Path("/proc/durabatch-test.db")  # no file can be created there, even by root
    ws.db_file = target
    proc = ws.cli("run", "in")
    assert proc.popen.returncode == 3, proc.describe()
    assert f"cannot create the database {target}" in proc.stderr
    assert "pick a writable place with --db" in proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_model_given_to_the_embedded_engine_is_said_to_be_unused(ws: Workspace) -> None:
    docs(ws)
    proc = ws.cli("run", "in", "--model", "gpt-4o")
    assert proc.popen.returncode == 0, proc.describe()
    assert "model gpt-4o: not used, the provider is local" in proc.stderr


def _bare(ws: Workspace, *args: str, stdout: Any) -> subprocess.CompletedProcess[str]:
    """A command whose standard output is what the test says: closed, or a full disk."""
    argv = [durabatch_bin(), *args, "--db", str(ws.db)]
    return subprocess.run(argv, cwd=ws.root, env=clean_env(), stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120, check=False)  # fmt: skip


def test_output_that_cannot_be_written_never_strands_a_run(ws: Workspace) -> None:
    docs(ws)
    with open("/dev/full", "w") as full:  # every write fails: no space left on device
        ran = _bare(ws, "run", "in", stdout=full)
    assert ran.returncode == 0, ran.stderr
    assert "cannot write to standard output (No space left on device)" in ran.stderr
    [run_id] = ws.run_ids()
    assert ws.status(run_id)["status"] == "done"  # processed, though its id went nowhere

    with open("/dev/full", "w") as full:
        exported = _bare(ws, "export", run_id, stdout=full)
    assert exported.returncode == 3, exported.stderr
    assert "cannot write the output: No space left on device" in exported.stderr
    assert "internal error" not in exported.stderr

    argv = [durabatch_bin(), "status", "--db", str(ws.db)]
    shut = subprocess.run(["sh", "-c", '"$@" >&-', "sh", *argv], cwd=ws.root, env=clean_env(),
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert shut.returncode == 0, shut.stderr
    assert "standard output is closed" in shut.stderr and "internal error" not in shut.stderr


def test_a_late_signal_after_the_run_stopped_cannot_change_its_exit_code(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd signals the whole group, and a second Ctrl-C can come just as a drained run
    reports: from the moment the run has stopped, SIGINT and SIGTERM exit at once with the
    run's own code (they went to the default action, 130 or 143, or to 'before any step
    started', exit 75)."""
    import signal

    from durabatch import cli
    from durabatch.config import Settings
    from durabatch.store import open_store

    docs(ws)
    store = open_store(str(ws.db))
    try:
        settings = Settings(db=str(ws.db))
        run = store.create_run(settings.run_settings() | {"cwd": str(ws.root)}, ["in"])
        # pytest's own handlers, put back after
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            monkeypatch.setattr(cli, "_as_program", True)  # as `durabatch` itself
            outcome = cli._process(store, run, settings)
            assert outcome.exit_code == 0
            for sig in (signal.SIGINT, signal.SIGTERM):
                child = os.fork()  # the handler ends its process: try it in a copy
                if child == 0:
                    os.kill(os.getpid(), sig)  # a late signal, handled here...
                    os._exit(99)  # ...so this line is never reached
                _, status = os.waitpid(child, 0)
                assert os.waitstatus_to_exitcode(status) == outcome.exit_code, sig
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    finally:
        store.close()


def test_a_signal_as_the_process_tears_down_is_ignored(ws: Workspace) -> None:
    """After atexit, Python puts back the default handlers while it tears down, and a
    signal then killed the process (-15, not the drained run's 75: seen in CI, a second
    SIGTERM just as a run exited). Here the last atexit hook to run (registered first, by
    a ``sitecustomize``) finds both signals ignored."""
    docs(ws)
    site = ws.root / "site"
    site.mkdir()
    seen = ws.root / "handlers"
    (site / "sitecustomize.py").write_text(
        # only in the run's own process (its parser processes ignore signals, and a
        # spawned one inherits the environment, a forked one the hook)
        "import atexit, os, signal\n"
        "if not os.environ.get('HOOKED_IN'):\n"
        "    os.environ['HOOKED_IN'] = str(os.getpid())\n"
        "    def last(pid=os.getpid()):\n"
        "        if os.getpid() == pid:\n"
        f"            with open({str(seen)!r}, 'w') as f:\n"
        "                for s in (signal.SIGINT, signal.SIGTERM):\n"
        "                    f.write(str(signal.getsignal(s) is signal.SIG_IGN) + '\\n')\n"
        "    atexit.register(last)\n",
        encoding="utf-8",
    )
    ran = ws.cli("run", "in", env={"PYTHONPATH": str(site)})
    assert ran.popen.returncode == 0, ran.describe()
    assert seen.read_text(encoding="utf-8").split() == ["True", "True"]


def test_export_events_and_compact_take_what_users_type(ws: Workspace) -> None:
    docs(ws)
    ran = ws.cli("run", "in")
    assert ran.popen.returncode == 0, ran.describe()
    assert "started: discovering documents" in ran.stderr  # not "0 documents known, ? to do"
    [run_id] = ws.run_ids()

    dash = ws.cli("export", run_id, "-o", "-")  # stdout, as `-` means everywhere else
    assert dash.popen.returncode == 0 and len(dash.stdout.splitlines()) == 2, dash.describe()
    assert not (ws.root / "-").exists()
    (ws.root / "out").mkdir()
    folder = ws.cli("export", run_id, "-o", "out", "--force")
    assert folder.popen.returncode == 2, folder.describe()
    assert "out is a folder; give a file name" in folder.stderr
    made = ws.cli("export", run_id, "-o", "out/results.jsonl")
    assert made.popen.returncode == 0, made.describe()
    assert (ws.root / "out/results.jsonl").stat().st_mode & 0o777 == 0o600

    huge = ws.cli("events", run_id, "--after", "99999999999999999999999")
    assert huge.popen.returncode == 2, huge.describe()
    assert "internal error" not in huge.stderr

    assert ws.cli("compact", run_id).popen.returncode == 0
    vacuumed = ws.cli("compact", run_id, "--vacuum")
    assert vacuumed.popen.returncode == 0, vacuumed.describe()
    assert "nothing to fold (1 event)" in vacuumed.stdout and "vacuumed" in vacuumed.stdout

    assert ws.cli("cancel", run_id).popen.returncode == 0
    refused = ws.cli("deliver", run_id, "--to", "outbox")
    assert refused.popen.returncode == 2, refused.describe()
    assert "was cancelled" in refused.stderr and "resume" not in refused.stderr


def test_odd_databases_are_refused_and_an_empty_file_becomes_a_private_one(ws: Workspace) -> None:
    docs(ws)
    for odd in ("", ":memory:"):
        ws.db_file = Path(odd) if odd else None
        argv = [durabatch_bin(), "run", "in", "--db", odd]
        proc = subprocess.run(argv, cwd=ws.root, env=clean_env(), capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "--db needs a file path" in proc.stderr
    assert not (ws.root / ":memory:").exists()

    pipe = ws.root / "pipe.db"
    os.mkfifo(pipe, 0o644)  # like /dev/null: never opened as a database, never chmodded
    ws.db_file = pipe
    fifo = ws.cli("status", timeout=30)
    assert fifo.popen.returncode == 2 and "not a regular file" in fifo.stderr, fifo.describe()
    assert pipe.stat().st_mode & 0o777 == 0o644

    (ws.root / "folder").mkdir()
    ws.db_file = ws.root / "folder"
    folder = ws.cli("status")
    assert folder.popen.returncode == 2 and "is a folder" in folder.stderr, folder.describe()

    empty = ws.root / "empty.db"
    empty.touch(mode=0o644)
    ws.db_file = empty
    read = ws.cli("resume")  # e.g. a run killed as it made the file: nothing to resume
    assert read.popen.returncode == 0, read.describe()
    assert "nothing to resume" in read.stderr
    assert empty.stat().st_mode & 0o777 == 0o600


def test_a_cancelled_run_leaves_no_document_pending(ws: Workspace) -> None:
    """DESIGN 1.4: every document ends done, failed or skipped; a cancelled run is never
    resumed, so what it had not finished is skipped, with the reason."""
    import signal

    from crashkit import EventLog, of_type, signal_when

    docs(ws, 300)  # far more than run before the SIGTERM lands
    proc = ws.spawn("run", "in", "--concurrency", "1")
    signal_when(proc, EventLog(ws.db), lambda e: len(of_type(e, "document_finished")) >= 2,
                signal.SIGTERM)  # fmt: skip
    assert proc.wait(60) == 75, proc.describe()
    [run_id] = ws.run_ids()
    cancelled = ws.cli("cancel", run_id)  # nobody owns it: cancelled at once
    assert cancelled.popen.returncode == 0, cancelled.describe()
    documents = ws.status(run_id)["documents"]
    assert documents["pending"] == documents["running"] == 0, documents
    assert documents["done"] + documents["skipped"] == 300
    rows = list(map(json.loads, ws.cli("export", run_id).stdout.splitlines()))
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert skipped and {r["reason"] for r in skipped} == {"cancelled"}
    assert ws.verify(run_id).popen.returncode == 0


def test_resume_checks_a_new_budget_like_run_does(ws: Workspace) -> None:
    from durabatch.config import Settings
    from durabatch.store import open_store

    docs(ws)
    store = open_store(str(ws.db))  # a run, created but not yet processed
    run_id = store.create_run(Settings().run_settings() | {"cwd": str(ws.root)}, ["in"]).id
    store.close()
    for bad, says in (("nan", "must be a finite number"), ("-1", "must be at least 0")):
        proc = ws.cli("resume", run_id, "--max-cost", bad)
        assert proc.popen.returncode == 2, proc.describe()
        assert f"--max-cost {says}" in proc.stderr
    assert ws.status(run_id)["settings"]["max_cost"] is None
