"""The read side of the SQLite store: streams and aggregates, never a write."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

from durabatch.errors import Reason
from durabatch.money import from_pico
from durabatch.store import queries
from durabatch.store.records import (
    Counts,
    DocStatus,
    Document,
    Event,
    SessionInfo,
    Step,
    StepState,
    StepStatus,
)


class SQLiteReads:
    conn: sqlite3.Connection

    def counts(self, run_id: str) -> Counts:
        return queries.counts(self.conn, run_id)

    def documents(self, run_id: str, *, with_reason: bool = False) -> Iterator[Document]:
        """A run's documents in discovery order; only those with a reason to show (failed,
        skipped; not the many a cancel skipped, all for the same reason) when
        ``with_reason``, filtered in SQL rather than row by row here."""
        where, args = (
            (" AND reason IS NOT NULL AND reason != ?", (Reason.CANCELLED,))
            if with_reason
            else ("", ())
        )
        cursor = self.conn.execute(
            f"SELECT * FROM documents WHERE run_id = ?{where} ORDER BY seq", (run_id, *args)
        )
        for row in cursor:
            yield queries.document_from_row(row)

    def step_states(self, run_id: str) -> Iterator[StepState]:
        cursor = self.conn.execute(
            "SELECT s.* FROM steps s JOIN documents d ON d.id = s.doc_id WHERE d.run_id = ?"
            " ORDER BY d.seq, s.step",
            (run_id,),
        )
        for row in cursor:
            yield queries.step_from_row(row)

    def partials(self, run_id: str) -> Iterator[tuple[int, str, int, Any]]:
        cursor = self.conn.execute(
            "SELECT p.doc_id, p.step, p.idx, p.output FROM partials p"
            " JOIN documents d ON d.id = p.doc_id WHERE d.run_id = ?",
            (run_id,),
        )
        for doc_id, step, idx, output in cursor:
            yield doc_id, step, idx, json.loads(output)

    def unfinished_sources(self, run_id: str) -> Iterator[str]:
        """The files of the run's documents not yet done, failed or skipped that still
        need them: their text is not extracted yet."""
        cursor = self.conn.execute(
            "SELECT source FROM documents WHERE run_id = ? AND status IN (?, ?)"
            " AND (step IS NULL OR step = ?)",
            (run_id, DocStatus.PENDING, DocStatus.RUNNING, Step.EXTRACT),
        )
        for (source,) in cursor:
            yield source

    def answered(self, run_id: str, step: str) -> int:
        """The documents of the run with an answer kept for ``step``: the step is done, or
        a long document's parts of it are saved."""
        row = self.conn.execute(
            "SELECT COUNT(*) FROM documents d WHERE d.run_id = ? AND (EXISTS (SELECT 1"
            " FROM steps s WHERE s.doc_id = d.id AND s.step = ? AND s.status = ?) OR EXISTS"
            " (SELECT 1 FROM partials p WHERE p.doc_id = d.id AND p.step = ?))",
            (run_id, step, StepStatus.DONE, step),
        ).fetchone()
        return int(row[0])

    def events(self, run_id: str, after: int = 0) -> Iterator[Event]:
        cursor = self.conn.execute(
            "SELECT * FROM events WHERE run_id = ? AND seq > ? ORDER BY seq", (run_id, after)
        )
        for row in cursor:
            yield queries.event_from_row(row)

    def sessions(self, run_id: str) -> list[SessionInfo]:
        rows = self.conn.execute(
            "SELECT * FROM sessions WHERE run_id = ? ORDER BY started_at", (run_id,)
        ).fetchall()
        return [SessionInfo(**dict(row)) for row in rows]

    def failures(self, doc_id: int) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT step, attempt, error_class, reason, message, at FROM failures"
            " WHERE doc_id = ? ORDER BY id",
            (doc_id,),
        ).fetchall()
        return [dict(row) for row in rows]

    def cache_savings(self, run_id: str) -> dict[str, Any]:
        """Model steps answered from an earlier run's identical step, and what those cost;
        extractions reused from an earlier run or an estimate (they cost no model call)."""
        row = self.conn.execute(
            "SELECT SUM(s.step != 'extract') AS steps, SUM(s.step = 'extract') AS extractions,"
            " COALESCE(SUM(s.saved_pico), 0) AS saved_pico,"
            " SUM(s.step != 'extract' AND s.saved_pico IS NULL) AS unpriced_steps FROM steps s"
            " JOIN documents d ON d.id = s.doc_id WHERE d.run_id = ? AND s.cached_from IS NOT NULL",
            (run_id,),
        ).fetchone()
        saved = None if row["unpriced_steps"] else from_pico(row["saved_pico"])
        return {"steps": row["steps"] or 0, "extractions": row["extractions"] or 0,
                "cost_usd": saved}  # fmt: skip

    def spend(
        self,
        run_id: str,
        *,
        by: str | None = None,
        kept: bool | None = None,
        before: str | None = None,
        error_class: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Model-call spend: grouped ``by`` model, step or document; only calls whose
        answer was (``kept=True``) or was not committed; only calls made ``before``;
        only calls that failed with ``error_class``."""
        where = ""
        params: tuple[Any, ...] = ()
        if kept is not None:
            where, params = " AND c.kept = ?", (int(kept),)
        if before is not None:
            where, params = where + " AND c.at < ?", (*params, before)
        if error_class is not None:
            where, params = where + " AND c.error_class = ?", (*params, error_class)
        return queries.spend(self.conn, run_id, by=by, where=where, params=params, limit=limit)

    def integrity_check(self) -> list[str]:
        rows = self.conn.execute("PRAGMA integrity_check").fetchall()
        problems = [row[0] for row in rows if row[0] != "ok"]
        problems += [
            f"foreign key: {tuple(row)}"
            for row in self.conn.execute("PRAGMA foreign_key_check").fetchall()
        ]
        return problems
