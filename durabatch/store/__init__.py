"""The durable state of runs: one interface, SQLite today, PostgreSQL later."""

from __future__ import annotations

from pathlib import Path

from durabatch.errors import UsageError
from durabatch.store.base import Store
from durabatch.store.sqlite import SQLiteStore

__all__ = ["Store", "open_store"]


def open_store(db: str, *, create: bool = True) -> Store:
    """Open the store named by ``--db``: a file path today."""
    if "://" in db:
        raise UsageError(
            f"--db {db.split('://')[0]}://... is not supported yet; use a SQLite file path"
        )
    if not db.strip() or db == ":memory:":  # nothing would be kept: no run could resume
        raise UsageError(f"--db needs a file path, not {db!r}: the run is kept there")
    return SQLiteStore(Path(db), create=create)
