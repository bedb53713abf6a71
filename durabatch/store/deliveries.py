"""The side effects of runs in SQLite: each delivery, its undo, and a cancel request.

A delivery is written down twice: as ``delivering`` before the side effect
(``intend_delivery``: a crash after the POST or the file write, before the checkpoint,
still leaves a record to undo), then as ``delivered`` by ``complete_step`` in the deliver
step's own transaction (``_add_delivery``), or by ``record_delivery`` for a re-delivery.
Every undo is one transaction, by the session that owns the run. Each writes its event, so
``durabatch verify`` rebuilds this table from the history like the others.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

from durabatch.clock import now_iso
from durabatch.errors import StoreError
from durabatch.store.records import (
    UNDOABLE,
    Delivered,
    Delivery,
    DeliveryStatus,
    Owner,
    RunStatus,
    Work,
)


class SQLiteDeliveries:
    conn: sqlite3.Connection

    def _tx(self) -> AbstractContextManager[None]:
        raise NotImplementedError  # the store's own

    def _event(self, run_id: str, type_: str, data: dict[str, Any], doc_id: int | None = None,
               step: str | None = None) -> None:  # fmt: skip
        raise NotImplementedError  # the store's own

    def _check_running(self, owner: Owner, work: Work) -> None:
        raise NotImplementedError  # the store's own

    def skip_unfinished(self, run_id: str, *, in_flight: bool = True) -> None:
        raise NotImplementedError  # the store's own

    def _upsert_delivery(self, run_id: str, doc_id: int, done: Delivered,
                         status: DeliveryStatus) -> tuple[int, Delivered]:  # fmt: skip
        """Inside a transaction: the row of one delivery, by its key (the intent, then its
        outcome, or the same delivery made again after a crash, update the same row; a
        delivery of other content, or made again after a withdrawal, has a key and a row
        of its own, so what was delivered before stays on record to be undone); its id.
        The folders it created are those of every attempt: a re-plan after a crash finds
        them already there. Its id, and the delivery as the row holds it."""
        row = self.conn.execute(
            "SELECT id, made_dirs FROM deliveries WHERE run_id = ? AND doc_id = ? AND target = ?"
            " AND idempotency_key = ?",
            (run_id, doc_id, done.target, done.key),
        ).fetchone()
        made = list(done.made_dirs)
        if row is not None:
            made += [d for d in json.loads(row[1]) if d not in made]
        made.sort(key=lambda d: d.count("/"), reverse=True)  # deepest first
        done = replace(done, made_dirs=tuple(made))
        if row is None:
            cursor = self.conn.execute(
                "INSERT INTO deliveries (run_id, doc_id, target, kind, location, sha256,"
                " idempotency_key, receiver_id, http_status, delivered_at, status,"
                " compensate_url, made_dirs, generation)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, doc_id, done.target, done.kind, done.location, done.sha256, done.key,
                 done.receiver_id, done.http_status, now_iso(), status, done.compensate_url,
                 json.dumps(made), done.generation),
            )  # fmt: skip
            return int(cursor.lastrowid or 0), done
        self.conn.execute(
            "UPDATE deliveries SET kind = ?, location = ?, sha256 = ?, receiver_id = ?,"
            " http_status = ?, delivered_at = ?, status = ?, compensate_url = ?, made_dirs = ?,"
            " generation = ?, undo = NULL, undone_at = NULL WHERE id = ?",
            (done.kind, done.location, done.sha256, done.receiver_id, done.http_status,
             now_iso(), status, done.compensate_url, json.dumps(made), done.generation,
             row[0]),
        )  # fmt: skip
        return int(row[0]), done

    def _add_delivery(self, run_id: str, doc_id: int, done: Delivered) -> None:
        """Inside a transaction: the side effect happened; its intent row becomes
        ``delivered`` (a row is made when there was none, as in databases of before)."""
        delivery_id, done = self._upsert_delivery(run_id, doc_id, done, DeliveryStatus.DELIVERED)
        self._event(run_id, "delivered", _data(delivery_id, done), doc_id)
        if done.kind != "folder":
            return  # a receiver keeps every copy it took: each stays to be undone
        # the file of an earlier delivery of this document (other content) was replaced
        replaced = self.conn.execute(
            "SELECT id, status FROM deliveries WHERE run_id = ? AND doc_id = ? AND target = ?"
            " AND location = ? AND id != ? AND status IN (?, ?, ?)",
            (run_id, doc_id, done.target, done.location, delivery_id, *UNDOABLE),
        ).fetchall()
        for earlier_id, _ in replaced:
            note = f"replaced by delivery {delivery_id}"
            self.conn.execute(
                "UPDATE deliveries SET status = ?, undo = ?, undone_at = ? WHERE id = ?",
                (DeliveryStatus.WITHDRAWN, note, now_iso(), earlier_id),
            )
            data = {"delivery": earlier_id, "status": DeliveryStatus.WITHDRAWN, "undo": note,
                    "why": "superseded", "location": done.location}  # fmt: skip
            self._event(run_id, "delivery_undone", data, doc_id)

    def intend_delivery(self, owner: Owner, run_id: str, doc_id: int, planned: Delivered,
                        work: Work | None = None) -> None:  # fmt: skip
        """Before the side effect, in its own transaction: write down what is about to
        be delivered (status ``delivering``), so that a process killed after the POST or
        the file write, before its checkpoint, leaves a record that compensation undoes.
        ``work``: the run's deliver step, which must still be this session's."""
        with self._tx():
            if work is not None:
                self._check_running(owner, work)
            else:
                self._owned(owner, run_id)
            delivery_id, planned = self._upsert_delivery(run_id, doc_id, planned,
                                                         DeliveryStatus.DELIVERING)  # fmt: skip
            self._event(run_id, "delivery_started", _data(delivery_id, planned), doc_id)

    def refuse_delivery(self, owner: Owner, run_id: str, doc_id: int, target: str,
                        why: str) -> None:  # fmt: skip
        """A re-delivery the target refused: nothing was delivered, nothing to undo."""
        with self._tx():
            self._owned(owner, run_id)
            self._refuse_delivery(run_id, doc_id, why, target)

    def _refuse_delivery(self, run_id: str, doc_id: int, why: str,
                         target: str | None = None) -> None:  # fmt: skip
        """``target`` None: the run's own deliver step, the one delivery of the document
        that can be in flight while the run is processed."""
        rows = self.conn.execute(
            "SELECT id FROM deliveries WHERE run_id = ? AND doc_id = ? AND status = ?"
            " AND (? IS NULL OR target = ?)",
            (run_id, doc_id, DeliveryStatus.DELIVERING, target, target),
        ).fetchall()
        for (delivery_id,) in rows:
            self.conn.execute(
                "UPDATE deliveries SET status = ?, undo = ? WHERE id = ?",
                (DeliveryStatus.REFUSED, why, delivery_id),
            )
            self._event(run_id, "delivery_refused", {"delivery": delivery_id, "why": why},
                        doc_id)  # fmt: skip

    def record_delivery(self, owner: Owner, run_id: str, doc_id: int, done: Delivered) -> None:
        """A re-delivery (``durabatch deliver``) made by the session owning the run."""
        with self._tx():
            self._owned(owner, run_id)
            self._add_delivery(run_id, doc_id, done)

    def record_undo(self, owner: Owner, delivery: Delivery, status: DeliveryStatus,
                    note: str, why: str) -> None:  # fmt: skip
        """One compensation, checkpointed: the next session does not undo it again
        (an ``undo_failed`` one it tries again)."""
        with self._tx():
            self._owned(owner, delivery.run_id)
            cursor = self.conn.execute(
                "UPDATE deliveries SET status = ?, undo = ?, undone_at = ? WHERE id = ?"
                " AND status = ?",
                (status, note, now_iso(), delivery.id, delivery.status),
            )
            if cursor.rowcount != 1:
                raise StoreError(f"delivery {delivery.id} changed under us while undoing it")
            data = {"delivery": delivery.id, "status": status, "undo": note, "why": why,
                    "location": delivery.location}  # fmt: skip
            self._event(delivery.run_id, "delivery_undone", data, delivery.doc_id)

    def deliveries(
        self, run_id: str, *, status: DeliveryStatus | Sequence[DeliveryStatus] | None = None
    ) -> list[Delivery]:
        """A run's deliveries (of ``status``, one or several), latest first (the order
        they are undone in)."""
        wanted = [status] if isinstance(status, str) else list(status or [])
        where = f"AND status IN ({', '.join('?' * len(wanted))})" if wanted else ""
        rows = self.conn.execute(
            f"SELECT * FROM deliveries WHERE run_id = ? {where}"
            " ORDER BY delivered_at DESC, id DESC",
            (run_id, *wanted),
        ).fetchall()
        return [_delivery(row) for row in rows]

    def deliveries_of(self, doc_id: int) -> list[Delivery]:
        """One document's deliveries, to every target, oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM deliveries WHERE doc_id = ? ORDER BY id", (doc_id,)
        ).fetchall()
        return [_delivery(row) for row in rows]

    def request_cancel(self, run_id: str, *, unowned: bool = False) -> None:
        """Ask the run's owner, wherever it is, to stop: it looks at every heartbeat, and
        right after it takes the run. ``unowned``: nobody works on it (a lease left by a
        killed owner counts for nothing), so it is ``cancelled`` from now on, even if the
        compensation that follows is killed."""
        with self._tx():
            cursor = self.conn.execute(
                "UPDATE runs SET cancel_requested = 1, updated_at = ? WHERE id = ?"
                " AND cancel_requested = 0",
                (now_iso(), run_id),
            )
            data: dict[str, Any] = {}
            if (
                unowned
                and self.conn.execute(
                    "UPDATE runs SET status = ? WHERE id = ? AND status != ?",
                    (RunStatus.CANCELLED, run_id, RunStatus.CANCELLED),
                ).rowcount
            ):
                data["status"] = RunStatus.CANCELLED
            if cursor.rowcount or data:
                self._event(run_id, "cancel_requested", data)
            if data:  # a killed owner's in-flight steps wait for the session that takes over
                self.skip_unfinished(run_id, in_flight=False)

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
        compensate_url=row["compensate_url"],
        made_dirs=tuple(json.loads(row["made_dirs"])),
        generation=row["generation"],
    )


def _data(delivery_id: int, done: Delivered) -> dict[str, Any]:
    """A ``delivery_started`` or ``delivered`` event: the row, as replay rebuilds it."""
    return {"delivery": delivery_id, "target": done.target, "kind": done.kind,
            "location": done.location, "sha256": done.sha256, "key": done.key,
            "receiver_id": done.receiver_id, "http_status": done.http_status,
            "compensate_url": done.compensate_url, "made_dirs": list(done.made_dirs),
            "generation": done.generation}  # fmt: skip
