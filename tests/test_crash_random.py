"""kill -9 at many random moments against a real API server, then compare with a run that
was never interrupted: same results, bounded extra calls, a history that replays.

Seeded: a failure prints its seed; replay it with DURABATCH_CRASH_SEED=<seed>. Run it
longer with DURABATCH_CRASH_KILLS=200 (default 20) and DURABATCH_CRASH_DOCS=1000.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from crashkit import (
    EventLog,
    Proc,
    Workspace,
    all_threads_stopped,
    comparable,
    of_type,
    query,
    signal_when,
)
from fakeapi import FakeAPI, Request, user_text
from fixtures_docs import docx_file, text_pdf

SEED = int(os.environ.get("DURABATCH_CRASH_SEED", "20261126"))
KILLS = int(os.environ.get("DURABATCH_CRASH_KILLS", "20"))
DOCS = int(os.environ.get("DURABATCH_CRASH_DOCS", "150"))
CONCURRENCY = 4
PROGRESS_CAP = 15  # steps committed between two kills at most; a run has 3 a document
MODEL = ["--provider", "openai", "--model", "gpt-5.4-mini", "--price-provider", "gmi"]


def mixed_corpus(root: Path, count: int, rng: random.Random) -> None:
    """Text, Markdown, HTML, PDF and DOCX documents, and a few that fail or are skipped."""
    folder = root / "in"
    folder.mkdir()
    for n in range(count):
        words = " ".join(rng.choice(["harbour", "board", "budget", "tender", "pilot", "audit"])
                         for _ in range(rng.randint(20, 120)))  # fmt: skip
        text = f"DOC-{n:04d} Maria Okafor of Acme Corp met on {n % 28 + 1} May 2025. {words}."
        kind = n % 6
        if kind == 0:
            (folder / f"d{n:04d}.txt").write_text(text)
        elif kind == 1:
            (folder / f"d{n:04d}.md").write_text(f"# Note {n}\n\n{text}\n")
        elif kind == 2:
            (folder / f"d{n:04d}.html").write_text(f"<html><body><p>{text}</p></body></html>")
        elif kind == 3:
            (folder / f"d{n:04d}.pdf").write_bytes(text_pdf(text))
        elif kind == 4:
            (folder / f"d{n:04d}.docx").write_bytes(docx_file([text]))
        else:
            (folder / f"d{n:04d}.txt").write_text(text)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj <<")  # failed: malformed
    (folder / "empty.txt").write_bytes(b"")  # skipped: empty


def served(api: FakeAPI) -> int:
    return len(api.completions())


def kill_at_random(ws: Workspace, proc: Proc, log: EventLog, rng: random.Random) -> bool:
    """SIGKILL after a random wait or a random amount of progress; False if it ended first.

    A wait ends early once PROGRESS_CAP more steps are committed: a fast machine commits
    dozens in 1.5 s, and 20 kills must not finish the run's 450 steps whatever its speed."""
    before = len(of_type(log.refresh(), "step_completed"))
    if rng.random() < 0.5:
        deadline = time.monotonic() + rng.uniform(0.05, 1.5)
        wanted = before + PROGRESS_CAP
    else:
        deadline = float("inf")
        wanted = before + rng.randint(1, PROGRESS_CAP)

    def now(events: list[Any]) -> bool:
        return time.monotonic() >= deadline or len(of_type(events, "step_completed")) >= wanted

    try:
        signal_when(proc, log, now, signal.SIGKILL, timeout=60)
    except AssertionError:
        if proc.popen.poll() is not None:
            return False
        raise
    return proc.wait(30) == -signal.SIGKILL  # not if it ended just before the kill


@pytest.mark.crash
@pytest.mark.timeout(900)
def test_many_random_kills_change_nothing_but_a_bounded_number_of_calls(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"seed {SEED}: replay with DURABATCH_CRASH_SEED={SEED}")
    (tmp_path / "calm").mkdir()
    mixed_corpus(tmp_path / "calm", DOCS, random.Random(SEED))
    shutil.copytree(tmp_path / "calm", tmp_path / "killed")  # the same bytes on both sides
    calm = Workspace(tmp_path / "calm", extra_env={"DURABATCH_API_KEY": "sk-test"})
    killed = Workspace(tmp_path / "killed", extra_env={"DURABATCH_API_KEY": "sk-test"})
    try:
        with FakeAPI(latency=0.03) as api:
            args = ["in", *MODEL, "--base-url", api.base_url, "--concurrency", str(CONCURRENCY)]
            done = calm.cli("run", *args, timeout=300)
            assert done.popen.returncode == 1, done.describe()  # broken.pdf fails
            baseline_calls = served(api)
            [calm_id] = calm.run_ids()
            expected = comparable(calm.export(calm_id))

            proc = killed.spawn("run", *args)
            log = EventLog(killed.db)
            kills = 0
            while kills < KILLS and kill_at_random(killed, proc, log, rng):
                kills += 1
                started = killed.run_ids()  # killed before its run existed: run again
                proc = killed.spawn("resume", *started) if started else killed.spawn("run", *args)
            assert proc.wait(300) == 1, proc.describe()
            crashed_calls = served(api) - baseline_calls
        [run_id] = killed.run_ids()
        result = comparable(killed.export(run_id))
        status = killed.status(run_id)
        verified = killed.verify(run_id)
        events = killed.events()
    finally:
        calm.cleanup()
        killed.cleanup()

    print(f"kills {kills}, calls {crashed_calls} vs {baseline_calls} uninterrupted")
    assert kills >= min(KILLS, 20)
    assert result == expected  # identical results, document for document
    assert crashed_calls <= baseline_calls + kills * CONCURRENCY
    assert verified.popen.returncode == 0, verified.describe()
    docs = status["documents"]
    assert docs["total"] == DOCS + 2 == docs["done"] + docs["failed"] + docs["skipped"]
    assert (docs["failed"], docs["skipped"], docs["pending"], docs["running"]) == (1, 1, 0, 0)
    assert status["interruptions"] <= kills
    assert len(of_type(events, "session_lost")) == status["interruptions"]
    completions = [(e.doc_id, e.step) for e in of_type(events, "step_completed")]
    assert len(completions) == len(set(completions))  # no step finished twice


def stop(pid: int, timeout: float = 30) -> bool:
    """SIGSTOP ``pid`` and wait until every thread of it has stopped: kill() returns before
    they do, and a thread still running could read an answer sent meanwhile."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all_threads_stopped(pid):
            return True
        time.sleep(0.001)
    return False


def _target(request: Request) -> bool:
    body = request.get("json") or {}
    return "DOC-0003" in user_text(request) and "response_format" not in body


def test_killed_after_the_answer_arrived_but_before_its_commit_repeats_one_call(
    tmp_path: Path,
) -> None:
    mixed_corpus(tmp_path, 6, random.Random(SEED))
    ws = Workspace(tmp_path, extra_env={"DURABATCH_API_KEY": "sk-test"})
    try:
        with FakeAPI() as api:
            args = ["in", *MODEL, "--base-url", api.base_url, "--concurrency", "1"]
            proc = ws.spawn("run", *args)
            stopped: list[bool] = []

            def stop_client(request: Request) -> None:  # before the answer goes out
                if _target(request) and api.before_reply is not None:
                    api.before_reply = None
                    stopped.append(stop(proc.pid))  # so it can neither read nor commit it

            def kill_client(request: Request) -> None:  # the answer is sent in full
                if _target(request) and api.after_reply is not None:
                    api.after_reply = None
                    os.kill(proc.pid, signal.SIGKILL)  # the answer is in its socket, unread

            api.before_reply, api.after_reply = stop_client, kill_client
            assert proc.wait(60) == -signal.SIGKILL, proc.describe()
            assert stopped == [True], "the client was still running when the answer went out"
            [run_id] = ws.run_ids()
            assert ws.cli("resume", run_id).popen.returncode == 1
            asked = [r for r in api.completions() if _target(r)]
        report = json.loads(ws.cli("cost", run_id, "--json").stdout)
        rows = query(ws.db, "SELECT c.kept, c.error_class FROM model_calls c JOIN documents d"
                     " ON d.id = c.doc_id WHERE d.path = 'in/d0003.pdf' AND c.step = 'summarize'"
                     " ORDER BY c.id")  # fmt: skip
        verified = ws.verify(run_id)
    finally:
        ws.cleanup()
    assert len(asked) == 2  # paid once more, never twice more
    assert [(r["kept"], r["error_class"]) for r in rows] == [(0, "LostInFlight"), (1, None)]
    assert report["lost_in_flight"]["calls"] == 1 and report["wasted"]["calls"] == 1
    assert verified.popen.returncode == 0


def test_killed_just_after_the_commit_repeats_nothing(tmp_path: Path) -> None:
    mixed_corpus(tmp_path, 6, random.Random(SEED))
    ws = Workspace(tmp_path, extra_env={"DURABATCH_API_KEY": "sk-test"})
    try:
        with FakeAPI(latency=0.3) as api:
            args = ["in", *MODEL, "--base-url", api.base_url, "--concurrency", "1"]
            proc = ws.spawn("run", *args)
            log = EventLog(ws.db)

            def committed(events: list[Any]) -> bool:
                paths = {
                    e.doc_id: e.data.get("path") for e in of_type(events, "document_discovered")
                }
                return any(paths.get(e.doc_id) == "in/d0003.pdf" and e.step == "summarize"
                           for e in of_type(events, "step_completed"))  # fmt: skip

            signal_when(proc, log, committed, signal.SIGKILL)
            proc.wait(30)
            [run_id] = ws.run_ids()
            assert ws.cli("resume", run_id).popen.returncode == 1
            asked = [r for r in api.completions() if _target(r)]
        verified = ws.verify(run_id)
    finally:
        ws.cleanup()
    assert len(asked) == 1
    assert verified.popen.returncode == 0
