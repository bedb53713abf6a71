"""Whose a database file is, and whether its schema is up to date, read with plain SQL.

The migration library (sqlite-utils, ``schema``) takes a command about 40 ms to import;
only a database with a migration to apply needs it.
"""

from __future__ import annotations

import sqlite3

SET = "durabatch"  # our migrations' set in the table below
TABLE = "_sqlite_migrations"  # where sqlite-utils records each migration applied
LATEST = "m017_cheaper_step_record"  # the last migration in ``schema`` (a test checks)


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
