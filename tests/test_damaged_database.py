"""A damaged database, another program's database, a locks folder that cannot be written.

Each is met through the installed command, in a subprocess, on real files: the user gets
one line saying what happened and what to do, a specific exit code, and no traceback.
Nothing of durabatch's store is mocked; the damage is real bytes written over a page.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from crashkit import EventLog, Workspace, clean_env, durabatch_bin, note_text, sigkill_when


def notes(root: Path, count: int = 3) -> None:
    (root / "in").mkdir()
    for n in range(count):
        (root / "in" / f"note_{n}.txt").write_text(note_text(n), encoding="utf-8")


@pytest.fixture
def finished(ws: Workspace) -> Iterator[tuple[Workspace, str]]:
    """A workspace whose database holds one finished run."""
    notes(ws.root)
    done = ws.cli("run", "in/")
    assert done.popen.returncode == 0, done.describe()
    [run_id] = ws.run_ids()
    yield ws, run_id


def damage_root_page(db: Path, table: str) -> None:
    """Write garbage over the first page of ``table``: the header stays intact."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
        (size,) = conn.execute("PRAGMA page_size").fetchone()
        (page,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
    conn.close()
    with db.open("r+b") as handle:
        handle.seek((page - 1) * size)
        handle.write(b"\xde\xad" * (size // 2))


def says_damaged(stderr: str, db: Path) -> None:
    assert f"{db} is damaged" in stderr, stderr
    assert "backup" in stderr and ".recover" in stderr and "durabatch verify" in stderr
    assert "durabatch resume" not in stderr  # resuming a damaged file cannot help
    assert "internal error" not in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_every_command_on_a_damaged_page_says_the_file_is_damaged_and_what_to_do(
    finished: tuple[Workspace, str],
) -> None:
    ws, run_id = finished
    damage_root_page(ws.db, "runs")
    for args in (
        ["status"],
        ["status", run_id],
        ["export", run_id],
        ["events", run_id],
        ["cost", run_id],
        ["resume", run_id],
        ["resume"],
        ["run", "in/"],  # its first write transaction reads the damaged page
        ["compact", run_id],
    ):
        proc = ws.cli(*args)
        assert proc.popen.returncode == 3, f"{args}: {proc.describe()}"
        says_damaged(proc.stderr, ws.db)


def test_verify_reports_a_damaged_file_as_its_finding_and_exits_1(
    finished: tuple[Workspace, str],
) -> None:
    ws, run_id = finished
    damage_root_page(ws.db, "runs")
    checked = ws.cli("verify", run_id)
    assert checked.popen.returncode == 1, checked.describe()
    assert f"database: {ws.db} is damaged" in checked.stdout, checked.describe()
    assert "internal error" not in checked.stderr and "Traceback" not in checked.stderr
    as_json = ws.cli("verify", run_id, "--json")
    assert as_json.popen.returncode == 1, as_json.describe()
    report = json.loads(as_json.stdout)
    assert report["ok"] is False and any("is damaged" in p for p in report["problems"])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("table", ["notes", "runs"])  # "runs": a name durabatch uses too
def test_another_programs_database_is_refused_and_left_untouched(ws: Workspace, table: str) -> None:
    notes(ws.root)
    other = ws.root / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute(f"INSERT INTO {table} (body) VALUES ('theirs')")
    conn.close()
    before = digest(other)
    for args in (["status"], ["verify", "x"], ["run", "in/"]):
        proc = Workspace(ws.root, db_file=other).cli(*args)
        assert proc.popen.returncode == 2, f"{args}: {proc.describe()}"
        assert f"{other} is another program's database" in proc.stderr, proc.stderr
        assert "pick another --db" in proc.stderr and "Traceback" not in proc.stderr
    assert digest(other) == before
    assert sorted(p.name for p in ws.root.iterdir() if p.name.startswith("other")) == [
        "other.db"
    ]  # no journal, no folder of durabatch's beside it

    empty = ws.root / "empty.db"
    empty.touch()  # an empty file is a new durabatch database, as before
    started = Workspace(ws.root, db_file=empty).cli("run", "in/")
    assert started.popen.returncode == 0, started.describe()


def without_dac_override() -> list[str]:
    """A prefix under which file permissions hold, even for root; skip when none does."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: folder permissions are not enforced")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


def test_a_locks_folder_that_cannot_be_written_is_named_with_the_fix(ws: Workspace) -> None:
    notes(ws.root)
    log = EventLog(ws.db)
    killed = ws.spawn("run", "in/")
    sigkill_when(killed, log, lambda events: any(e.type == "run_created" for e in events))
    [run_id] = ws.run_ids()  # unfinished: resume must take its lock

    locks = ws.root / "d.db.d" / "locks"
    for lock in locks.iterdir():
        lock.unlink()
    prefix = without_dac_override()
    locks.chmod(0o500)
    try:
        probe = subprocess.run([*prefix, "touch", str(locks / "probe")], capture_output=True)
        if probe.returncode == 0:
            pytest.skip("folder permissions are not enforced here")
        for args in (["resume", run_id], ["run", "in/"]):
            argv = [*prefix, durabatch_bin(), *args, "--db", str(ws.db)]
            proc = subprocess.run(argv, cwd=ws.root, env=clean_env(), capture_output=True,
                                  text=True, timeout=60)  # fmt: skip
            assert proc.returncode == 3, f"{args}: {proc.stderr}"
            assert f"{locks} is not writable" in proc.stderr, proc.stderr
            assert "fix its permissions" in proc.stderr
            assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    finally:
        locks.chmod(0o700)


def test_verify_reports_a_database_too_damaged_to_open_as_its_finding(
    finished: tuple[Workspace, str],
) -> None:
    ws, run_id = finished
    assert ws.cli("compact", run_id, "--vacuum").popen.returncode == 0  # all in the file
    cut = ws.root / "cut.db"
    cut.write_bytes(ws.db.read_bytes()[:8192])  # a copy cut short: its schema is gone
    argv = [durabatch_bin(), "verify", run_id, "--db", str(cut)]
    proc = subprocess.run(argv, cwd=ws.root, env=clean_env(), capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the finding, not a halt (3)
    assert f"{cut} is damaged" in proc.stdout
    assert "Traceback" not in proc.stderr
