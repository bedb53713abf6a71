"""Crash-test kit: real `durabatch` subprocesses on a real SQLite file, watched from outside.

The test reads the run's events read-only while the process works, and sends a real
signal the moment a condition holds (a step started, N steps committed, ...). Nothing is
mocked: what the tests see is what a user's cron job would see.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DOCS = ROOT / "sample_docs"
POLL_SECONDS = 0.01
EXPORT_FIELDS = ("status", "reason", "summary", "entities", "sha256")
NOT_FINISHED = 75


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``folder`` (made here) with ``options``, unmounted after; the
    test is skipped where mounting is not allowed (CI runs as root)."""
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def durabatch_bin() -> str:
    beside = Path(sys.executable).parent / "durabatch"
    if beside.exists():
        return str(beside)
    found = shutil.which("durabatch")
    assert found, "the durabatch console script is not installed"
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """The machine's environment without any DURABATCH_* or OPENAI_* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DURABATCH_", "OPENAI_"))}
    env.update(extra)
    return env


# -- inputs -------------------------------------------------------------------------


def slow_html(megabytes: float, text: str) -> str:
    """A page whose parsing takes seconds (millions of tags) but whose text is short."""
    filler = "<br>" * int(megabytes * 1_000_000 / 4)
    return f"<html><body><h1>Slow page</h1><p>{text}</p>{filler}</body></html>"


SLOW_TEXT = (
    "Margaret Ellison of Harbourline Logistics met the Riverton council on 3 March 2025 "
    "to agree a budget of $2.4 million for the new depot in Rotterdam."
)
NAMES = ("Alice Morgan", "Daniel Kowalski", "Fiona MacLeod", "Arjun Mehta", "Owen Pritchard")
PLACES = ("Riverton", "Shrewsbury", "Boston", "Rotterdam", "Glasgow")


def note_text(index: int) -> str:
    rng = random.Random(index)
    lines = []
    for para in range(4):
        who, other = rng.sample(NAMES, 2)
        where = rng.choice(PLACES)
        amount = rng.randrange(10, 900) * 1000
        lines.append(
            f"On {para + 3} May 2025 {who} met {other} in {where} to review note {index}. "
            f"They agreed to spend ${amount:,} on the harbour works and to report back to "
            f"the board of Northwind Trading before the end of June 2025."
        )
    return "\n\n".join(lines) + "\n"


def standard_inputs(root: Path, *, notes: int = 5, slow_mb: float = 2.0,
                    last_mb: float = 1.0) -> str:  # fmt: skip
    """sample_docs + text notes + a slow page in the middle + a slowish last document.

    Returns the input path relative to ``root`` (what the run is given, with cwd=root).
    In name order: damaged, grant, harbourline, kestrel, m_slow, northwind, notes_*,
    port, riverton, supplier, warehouse, zz_last.
    """
    folder = root / "in"
    shutil.copytree(SAMPLE_DOCS, folder)
    for i in range(1, notes + 1):
        (folder / f"notes_{i:02d}.txt").write_text(note_text(i), encoding="utf-8")
    (folder / "m_slow.html").write_text(slow_html(slow_mb, SLOW_TEXT), encoding="utf-8")
    if last_mb:
        (folder / "zz_last.html").write_text(slow_html(last_mb, note_text(99)), encoding="utf-8")
    return "in"


def long_text_inputs(root: Path, megabytes: float = 1.5) -> str:
    """sample_docs + one long text whose summary takes dozens of checkpointed chunks."""
    folder = root / "in"
    shutil.copytree(SAMPLE_DOCS, folder)
    count = int(megabytes * 1_000_000 / len(note_text(0)))
    long_text = "\n\n".join(note_text(i) for i in range(count))
    (folder / "m_long.txt").write_text(long_text, encoding="utf-8")
    return "in"


# -- the database, read from outside ---------------------------------------------------


@dataclass(frozen=True)
class Event:
    seq: int
    run_id: str
    type: str
    doc_id: int | None
    step: str | None
    data: dict[str, Any]
    at: str


def _read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def query(db: Path, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    conn = _read_only(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


class EventLog:
    """The events of a database as they appear; tolerates a database not created yet."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.events: list[Event] = []

    def refresh(self) -> list[Event]:
        last = self.events[-1].seq if self.events else 0
        try:
            rows = query(
                self.db,
                "SELECT seq, run_id, type, doc_id, step, data, at FROM events WHERE seq > ?"
                " ORDER BY seq",
                (last,),
            )
        except sqlite3.DatabaseError:  # not created yet, or its schema not yet committed
            return self.events
        self.events += [
            Event(
                r["seq"],
                r["run_id"],
                r["type"],
                r["doc_id"],
                r["step"],
                json.loads(r["data"]),
                r["at"],
            )
            for r in rows
        ]
        return self.events


def doc_ids(events: Sequence[Event]) -> dict[str, int]:
    """Document path -> id, from the discovery events."""
    return {e.data["path"]: e.doc_id for e in events if e.type == "document_discovered"}  # type: ignore[misc]


def of_type(events: Sequence[Event], type_: str, *, after: int = 0) -> list[Event]:
    return [e for e in events if e.type == type_ and e.seq > after]


def has_step_event(events: Sequence[Event], type_: str, path: str, step: str,
                   *, after: int = 0) -> bool:  # fmt: skip
    doc = doc_ids(events).get(path)
    return any(e.doc_id == doc and e.step == step for e in of_type(events, type_, after=after))


def completed_more_than_once(events: Sequence[Event]) -> dict[tuple[int, str], int]:
    counts = Counter((e.doc_id, e.step) for e in of_type(events, "step_completed"))
    return {key: n for key, n in counts.items() if n > 1}  # type: ignore[misc]


def session_of(events: Sequence[Event], pid: int) -> Event | None:
    started = [e for e in of_type(events, "session_started") if e.data["pid"] == pid]
    return started[-1] if started else None


# -- processes ----------------------------------------------------------------------------


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.popen.kill()
            self.popen.wait(10)
            raise AssertionError(
                f"pid {self.pid} still running after {timeout}s:\n{self.stderr}"
            ) from exc

    def describe(self) -> str:
        return f"pid {self.pid} rc={self.popen.returncode}\n--stdout--\n{self.stdout}" + (
            f"\n--stderr--\n{self.stderr}"
        )


@dataclass
class Workspace:
    """A folder holding the inputs and the database; every command runs with cwd here."""

    root: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    db_file: Path | None = None  # elsewhere than the folder, e.g. on a small disk
    _count: int = 0
    _procs: list[Proc] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.db_file or self.root / "d.db"

    def _argv(self, args: Sequence[str]) -> list[str]:
        return [durabatch_bin(), *args, "--db", str(self.db)]

    def _logs(self, name: str) -> tuple[Path, Path]:
        self._count += 1
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        stem = f"{self._count:02d}-{name}"
        return logs / f"{stem}.out", logs / f"{stem}.err"

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        """Start a command in the background; output goes to files (not a terminal)."""
        out, err = self._logs(args[0])
        with out.open("wb") as stdout, err.open("wb") as stderr:
            popen = subprocess.Popen(
                self._argv(args), cwd=self.root, env=clean_env(**self.extra_env, **(env or {})),
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            )  # fmt: skip
        proc = Proc(popen, out, err)
        self._procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 90, env: dict[str, str] | None = None) -> Proc:
        """Run a command to its end."""
        proc = self.spawn(*args, env=env)
        proc.wait(timeout)
        return proc

    def cleanup(self) -> None:
        """Kill whatever this test started and left running (after a failed assertion)."""
        for proc in self._procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait(10)

    # -- reading results back --

    def run_ids(self) -> list[str]:
        try:
            return [r["id"] for r in query(self.db, "SELECT id FROM runs ORDER BY created_at")]
        except sqlite3.DatabaseError:
            return []

    def status(self, run_id: str) -> dict[str, Any]:
        proc = self.cli("status", run_id, "--json")
        assert proc.popen.returncode == 0, proc.describe()
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def export(self, run_id: str) -> dict[str, dict[str, Any]]:
        proc = self.cli("export", run_id, "--format", "jsonl")
        assert proc.popen.returncode == 0, proc.describe()
        rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        return {row["path"]: row for row in rows}

    def verify(self, run_id: str) -> Proc:
        return self.cli("verify", run_id)

    def events(self) -> list[Event]:
        return EventLog(self.db).refresh()


def comparable(export: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {path: {k: row[k] for k in EXPORT_FIELDS} for path, row in export.items()}


def signal_when(proc: Proc, log: EventLog, condition: Callable[[list[Event]], bool],
                sig: int = signal.SIGKILL, timeout: float = 60) -> list[Event]:  # fmt: skip
    """Poll the events every 10 ms; send ``sig`` the moment ``condition`` holds.

    Returns the events as they were when the signal went out. Fails if the process ends
    before the condition is met (the kill point was never reached).
    """
    deadline = time.monotonic() + timeout
    while True:
        events = log.refresh()
        if condition(events):
            proc.popen.send_signal(sig)
            return list(events)
        if proc.popen.poll() is not None:
            raise AssertionError(f"exited before the signal point:\n{proc.describe()}")
        if time.monotonic() > deadline:
            proc.popen.kill()
            raise AssertionError(f"signal point not reached in {timeout}s:\n{proc.describe()}")
        time.sleep(POLL_SECONDS)


def sigkill_when(proc: Proc, log: EventLog, condition: Callable[[list[Event]], bool],
                 timeout: float = 60) -> list[Event]:  # fmt: skip
    """SIGKILL at the condition; return the events as the dead process left them."""
    signal_when(proc, log, condition, signal.SIGKILL, timeout)
    assert proc.wait(30) == -signal.SIGKILL, proc.describe()
    return log.refresh()


def wait_for_text(proc: Proc, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.stderr:
        assert proc.popen.poll() is None, f"exited before printing {text!r}:\n{proc.describe()}"
        assert time.monotonic() < deadline, f"{text!r} not printed in {timeout}s"
        time.sleep(POLL_SECONDS)


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces: split after the last ')'
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return _state(stat) != "Z"  # a zombie has exited


def all_threads_stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped: SIGSTOP lands on each thread in turn, after
    kill() has returned, and a thread still running could read or commit meanwhile."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):  # a thread that has just ended
            states.append(_state(stat.read_text()))
    return bool(states) and all(state == "T" for state in states)


def _state(stat: str) -> str:
    """The state letter of a /proc stat line (the command name in parentheses may hold
    spaces: split after the last ')')."""
    return stat.rsplit(")", 1)[1].split()[0]
