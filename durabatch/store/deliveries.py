"""The side effects of runs in SQLite: each delivery, its undo, and a cancel request.

A delivery made by a run's ``deliver`` step is written by ``complete_step`` in the
step's own transaction (``_add_delivery``); a re-delivery and every undo are one
transaction each, by the session that owns the run. Each writes its event, so
``durabatch verify`` rebuilds this table from the history like the others.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import Any

from durabatch.clock import now_iso
from durabatch.errors import StoreError
from durabatch.store.records import Delivered, Delivery, DeliveryStatus, Owner


class SQLiteDeliveries:
    conn: sqlite3.Connection

    def _tx(self) -> AbstractContextManager[None]:
        raise NotImplementedError  # the store's own

    def _event(self, run_id: str, type_: str, data: dict[str, Any], doc_id: int | None = None,
               step: str | None = None) -> None:  # fmt: skip
        raise NotImplementedError  # the store's own

    def _add_delivery(self, run_id: str, doc_id: int, done: Delivered) -> None:
        """Inside a transaction: note a delivery (again, if it was withdrawn before)."""
        now = now_iso()
        self.conn.execute(
            "INSERT INTO deliveries (run_id, doc_id, target, kind, location, sha256,"
            " idempotency_key, receiver_id, http_status, delivered_at, status)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, doc_id, target)"
            " DO UPDATE SET kind = excluded.kind, location = excluded.location,"
            " sha256 = excluded.sha256, idempotency_key = excluded.idempotency_key,"
            " receiver_id = excluded.receiver_id, http_status = excluded.http_status,"
            " delivered_at = excluded.delivered_at, status = excluded.status, undo = NULL,"
            " undone_at = NULL",
            (run_id, doc_id, done.target, done.kind, done.location, done.sha256, done.key,
             done.receiver_id, done.http_status, now, DeliveryStatus.DELIVERED),
        )  # fmt: skip
        (delivery_id,) = self.conn.execute(
            "SELECT id FROM deliveries WHERE run_id = ? AND doc_id = ? AND target = ?",
            (run_id, doc_id, done.target),
        ).fetchone()
        data = {"delivery": delivery_id, "target": done.target, "kind": done.kind,
                "location": done.location, "sha256": done.sha256, "key": done.key,
                "receiver_id": done.receiver_id, "http_status": done.http_status}  # fmt: skip
        self._event(run_id, "delivered", data, doc_id)

    def record_delivery(self, owner: Owner, run_id: str, doc_id: int, done: Delivered) -> None:
        """A re-delivery (``durabatch deliver``) made by the session owning the run."""
        with self._tx():
            self._owned(owner, run_id)
            self._add_delivery(run_id, doc_id, done)

    def record_undo(self, owner: Owner, delivery: Delivery, status: DeliveryStatus,
                    note: str, why: str) -> None:  # fmt: skip
        """One compensation, checkpointed: the next session does not undo it again."""
        with self._tx():
            self._owned(owner, delivery.run_id)
            cursor = self.conn.execute(
                "UPDATE deliveries SET status = ?, undo = ?, undone_at = ? WHERE id = ?"
                " AND status = ?",
                (status, note, now_iso(), delivery.id, DeliveryStatus.DELIVERED),
            )
            if cursor.rowcount != 1:
                raise StoreError(f"delivery {delivery.id} changed under us while undoing it")
            data = {"delivery": delivery.id, "status": status, "undo": note, "why": why,
                    "location": delivery.location}  # fmt: skip
            self._event(delivery.run_id, "delivery_undone", data, delivery.doc_id)

    def deliveries(self, run_id: str, *, status: DeliveryStatus | None = None) -> list[Delivery]:
        """A run's deliveries, latest first (the order they are undone in)."""
        where, params = ("AND status = ?", (run_id, status)) if status else ("", (run_id,))
        rows = self.conn.execute(
            f"SELECT * FROM deliveries WHERE run_id = ? {where}"
            " ORDER BY delivered_at DESC, id DESC",
            params,
        ).fetchall()
        return [_delivery(row) for row in rows]

    def request_cancel(self, run_id: str) -> None:
        """Ask the run's owner, wherever it is, to stop: it looks at every heartbeat."""
        with self._tx():
            cursor = self.conn.execute(
                "UPDATE runs SET cancel_requested = 1, updated_at = ? WHERE id = ?"
                " AND cancel_requested = 0",
                (now_iso(), run_id),
            )
            if cursor.rowcount:
                self._event(run_id, "cancel_requested", {})

    def delivery_counts(self, run_id: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT status, COUNT(*) FROM deliveries WHERE run_id = ? GROUP BY status", (run_id,)
        ).fetchall()
        return {status: n for status, n in rows}

    def cancel_requested(self, run_id: str) -> bool:
        row = self.conn.execute(
            "SELECT cancel_requested FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        return bool(row and row[0])

    def _owned(self, owner: Owner, run_id: str) -> None:
        row = self.conn.execute("SELECT lease_session FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or row[0] != owner.session_id:
            raise StoreError(f"run {run_id} is no longer ours; another process owns it")


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        target=row["target"],
        kind=row["kind"],
        location=row["location"],
        sha256=row["sha256"],
        key=row["idempotency_key"],
        receiver_id=row["receiver_id"],
        http_status=row["http_status"],
        id=row["id"],
        run_id=row["run_id"],
        doc_id=row["doc_id"],
        status=DeliveryStatus(row["status"]),
        undo=row["undo"],
        delivered_at=row["delivered_at"],
        undone_at=row["undone_at"],
    )
