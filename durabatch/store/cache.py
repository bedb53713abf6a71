"""Earlier answers to the same inputs: the reads behind "never pay twice".

``SQLiteCache`` is mixed into the store, and is also a connection of its own for
each worker thread (``CacheReader``): a worker looks up its step's earlier
answer itself, beside the writer, which then spends no statement on a miss.
Reads only: WAL lets them run while the writer commits, and they see only
committed answers.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path

from durabatch.errors import StoreError
from durabatch.money import from_pico
from durabatch.store.connection import connect_reader, damaged, damaged_error
from durabatch.store.records import CachedStep, StepStatus

PAIRS_PER_LOOKUP = 400  # two parameters a pair: well under SQLite's limit


class SQLiteCache:
    conn: sqlite3.Connection

    def cached_step(self, cache_key: str, sha256: str) -> CachedStep | None:
        """The answer of a finished step with the same inputs, from any run here.
        ``sha256``: the content the key was made from; answers are found through it."""
        return self.cached_steps([(cache_key, sha256)]).get(cache_key)

    def cached_steps(self, wanted: Sequence[tuple[str, str]]) -> dict[str, CachedStep]:
        """``cached_step`` for many (key, content) pairs in one statement: the answers
        found, by key. The writer looks up the steps it runs itself this way, once a turn:
        each statement gives up the GIL, and getting it back from the busy workers took it
        about as long as the step it was for."""
        found: dict[str, CachedStep] = {}
        for start in range(0, len(wanted), PAIRS_PER_LOOKUP):
            chunk = wanted[start : start + PAIRS_PER_LOOKUP]
            pairs = set(chunk)
            marks = ", ".join("?" * len(chunk))
            rows = self.conn.execute(
                # each pair's first answer (an original before a copy, the earliest first),
                # ranked among the candidates the content's index finds; its cost is
                # summed for that answer alone, however many runs answered it since
                "SELECT f.cache_key, f.sha256, f.output, f.run_id, f.path,"
                " (SELECT SUM(c.cost_pico) FROM model_calls c WHERE c.doc_id = f.doc_id"
                "  AND c.step = f.step AND c.kept = 1) AS cost_pico,"
                " (SELECT COUNT(*) FROM model_calls c WHERE c.doc_id = f.doc_id"
                "  AND c.step = f.step AND c.kept = 1 AND c.cost_pico IS NULL) AS unpriced_calls"
                " FROM (SELECT s.doc_id, s.step, s.cache_key, d.sha256, s.output, d.run_id,"
                "  d.path, ROW_NUMBER() OVER (PARTITION BY s.cache_key, d.sha256"
                "  ORDER BY s.cached_from IS NOT NULL, s.completed_at) AS nth"
                f"  FROM documents d JOIN steps s ON s.doc_id = d.id WHERE d.sha256 IN ({marks})"
                f"  AND s.cache_key IN ({marks}) AND s.status = ?) AS f WHERE f.nth = 1",
                (*(sha256 for _, sha256 in chunk), *(key for key, _ in chunk), StepStatus.DONE),
            ).fetchall()
            for row in rows:
                key = row["cache_key"]
                if (key, row["sha256"]) not in pairs:  # a key asked with other content
                    continue
                cost = None if row["unpriced_calls"] else from_pico(row["cost_pico"] or 0)
                found[key] = CachedStep(json.loads(row["output"]),
                                        f"{row['run_id']}:{row['path']}", cost)  # fmt: skip
        return found

    def cached_extraction(self, cache_key: str, sha256: str) -> CachedStep | None:
        """A file's text extracted earlier from the same bytes (``sha256``): by a run's
        extract step, or by `durabatch estimate`."""
        row = self.conn.execute(
            "SELECT output, artifact, source,"
            " EXISTS (SELECT 1 FROM texts t WHERE t.digest = artifact) AS inline FROM"
            " (SELECT s.output, s.artifact, d.run_id || ':' || d.path AS source FROM steps s"
            "  JOIN documents d ON d.id = s.doc_id WHERE d.sha256 = ? AND s.cache_key = ?"
            "  AND s.status = ? UNION ALL SELECT output, artifact, 'estimate:' || path"
            "  FROM extractions WHERE key = ?) LIMIT 1",
            (sha256, cache_key, StepStatus.DONE, cache_key),
        ).fetchone()
        if row is None:
            return None
        output, artifact, source = json.loads(row["output"]), row["artifact"], row["source"]
        return CachedStep(output, source, Decimal(0), artifact, bool(row["inline"]))


class CacheReader(SQLiteCache):
    """The cache lookups on a read-only connection of their own, for one thread (or on
    the writer's: see ``__init__``); it is opened at the first lookup, so a failure to
    open is that lookup's error."""

    def __init__(self, path: Path, conn: sqlite3.Connection | None = None) -> None:
        """``conn``: the writer's own connection, for lookups on its own thread between
        its transactions (its pages are cached, as a reader's are not after each commit);
        it stays open when this closes."""
        self.path = path
        self.opened = conn is not None
        self.owned = conn is None
        if conn is not None:
            self.conn = conn

    def cached_steps(self, wanted: Sequence[tuple[str, str]]) -> dict[str, CachedStep]:
        with self._reading():
            return super().cached_steps(wanted)

    def cached_extraction(self, cache_key: str, sha256: str) -> CachedStep | None:
        with self._reading():
            return super().cached_extraction(cache_key, sha256)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            if not self.opened:
                self.conn = connect_reader(self.path)
                self.opened = True
            yield
        except sqlite3.Error as exc:
            if damaged(exc):
                raise damaged_error(self.path, exc) from exc
            raise StoreError(
                f"cannot read earlier answers from {self.path}: {exc}; check the disk "
                "and the file, then `durabatch resume`"
            ) from exc

    def close(self) -> None:
        if self.opened and self.owned:
            self.conn.close()
