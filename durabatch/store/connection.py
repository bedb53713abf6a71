"""Opening the SQLite file: one place that sets every pragma, and says why."""

from __future__ import annotations

import os
import shlex
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import TypeGuard

from durabatch.errors import DatabaseDamaged, StoreError, UsageError
from durabatch.store.migrated import foreign

BUSY_TIMEOUT_MS = 10_000


def connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit BEGIN; every write is an explicit BEGIN IMMEDIATE
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    # a reader or a second process waits for a lock instead of failing at once
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # before anything is written to it (WAL mode is recorded in the file itself)
    if foreign(conn):
        conn.close()
        raise UsageError(
            f"{path} is another program's database (it has tables and no durabatch "
            "schema); durabatch leaves it untouched: pick another --db"
        )
    # WAL: `status` and `export` read while a run writes, without blocking it
    _wal(conn)
    # FULL: a committed step survives power loss, not only a process crash
    conn.execute("PRAGMA synchronous=FULL")
    # documents, steps and calls must point at rows that exist
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. Two processes opening a new file at once can race to switch it,
    and SQLite then answers "locked" at once, without its busy handler: wait here."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def connect_reader(path: Path) -> sqlite3.Connection:
    """A connection that only reads (a worker's cache lookups), beside the writer's; it
    never creates the file (a database moved away mid-run is an error, not a new one)."""
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only=ON")
    return conn


def create_private(path: Path) -> None:
    """Create the database file readable by its owner only (keys never go in, but results do)."""
    if not path.parent.is_dir():
        raise UsageError(f"folder {path.parent} does not exist; create it or pick another --db")
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.fchmod(fd, 0o600)  # an empty file that was there already keeps no wider mode
    except OSError as exc:  # an unwritable folder, a read-only disk: the user's to fix
        raise StoreError(
            f"cannot create the database {path}: {exc.strerror}; run where you can write, "
            "or pick a writable place with --db"
        ) from exc
    os.close(fd)


def damaged(exc: BaseException) -> TypeGuard[sqlite3.DatabaseError]:
    """SQLite found the file's pages inconsistent (SQLITE_CORRUPT): no retry helps."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    return isinstance(exc, sqlite3.DatabaseError) and code == sqlite3.SQLITE_CORRUPT


def damaged_error(path: Path, exc: sqlite3.DatabaseError) -> DatabaseDamaged:
    return DatabaseDamaged(
        f"{path} is damaged ({exc}); restore it from a backup, or rebuild it with "
        f"`sqlite3 {shlex.quote(str(path))} .recover | sqlite3 NEW.db` and move NEW.db "
        "in its place; `durabatch verify RUN` then checks it"
    )


def write_error(path: Path, exc: sqlite3.DatabaseError) -> StoreError:
    if damaged(exc):
        return damaged_error(path, exc)
    if "locked" in str(exc) or "busy" in str(exc):
        return StoreError(
            f"{path} stayed locked by another process for {BUSY_TIMEOUT_MS // 1000}s; "
            "check for a stuck durabatch or sqlite3 process, then `durabatch resume`"
        )
    return StoreError(
        f"cannot write to {path}: {exc}; free disk space or fix permissions, "
        "then `durabatch resume`"
    )
