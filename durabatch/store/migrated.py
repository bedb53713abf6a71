"""Whose a database file is, whether its schema is up to date, and a new one's schema,
all with plain SQL.

The migration library (sqlite-utils, ``schema``) takes a command about 40 ms to import,
and replaying every migration on a new database about 60 ms more: only an older
database, with a migration to apply, needs them. A new one is made from
``data/schema.sql``, what the migrations leave (``scripts/snapshot_schema.py`` writes
it; a test checks that both give the same schema).
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterator
from importlib import resources

SET = "durabatch"  # our migrations' set in the table below
TABLE = "_sqlite_migrations"  # where sqlite-utils records each migration applied
LATEST = "m017_cheaper_step_record"  # the last migration in ``schema`` (a test checks)
# the guard m001 created; `compact` lifts it for one transaction and puts it back as is
EVENTS_NO_DELETE = (
    "CREATE TRIGGER events_no_delete BEFORE DELETE ON events\n"
    "            BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
)


def foreign(conn: sqlite3.Connection) -> bool:
    """Whether the file is another program's database: it holds something, and no
    durabatch migration is recorded in it. An empty file is a new durabatch database."""
    names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    if not names:
        return False
    if TABLE not in names:
        return True
    mine = conn.execute(f"SELECT 1 FROM {TABLE} WHERE migration_set = ? LIMIT 1", (SET,))
    return mine.fetchone() is None


def up_to_date(conn: sqlite3.Connection) -> bool:
    """Whether the latest migration is applied (they are applied in order, each with its
    record in one transaction, so then every one is)."""
    try:
        row = conn.execute(
            f"SELECT 1 FROM {TABLE} WHERE migration_set = ? AND name = ?", (SET, LATEST)
        ).fetchone()
    except sqlite3.OperationalError:  # no such table: a new database
        return False
    return row is not None


def empty(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None


def create(conn: sqlite3.Connection) -> None:
    """The whole schema in a new, empty database, with the record of every migration as
    applied (inside the caller's transaction)."""
    # the time as the migration library writes it, so both kinds of record read alike
    at = str(datetime.datetime.now(datetime.UTC))
    script = resources.files("durabatch").joinpath("data/schema.sql").read_text(encoding="utf-8")
    for sql in _statements(script):
        conn.execute(sql, {"at": at} if ":at" in sql else {})


def _statements(script: str) -> Iterator[str]:
    """The statements of a script, one at a time: ``executescript`` would commit the
    caller's transaction first. A trigger's body has semicolons of its own."""
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip().removesuffix(";")
            pending = ""
    if pending.strip():
        raise ValueError(f"data/schema.sql ends inside a statement: {pending.strip()[:60]}")
