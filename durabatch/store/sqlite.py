"""The run state in one SQLite file, written by a single writer.

Every state change is one transaction that also appends its event, so the
tables can always be rebuilt from the events (``durabatch verify``). A state
transition is a conditional UPDATE (``WHERE status = ?`` and the owning
session) whose row count is checked: a session that lost its lease cannot
overwrite what the new owner did. Completing a step also claims the
document's next step in the same transaction, and ``batch`` lets the engine
commit the results that reached it together in one transaction: at most one
commit per step, fewer when several steps finish at once.

Ownership has two layers. An ``flock`` on a lock file beside the database is
released by the kernel the moment its process dies, so a ``kill -9``-ed run
is taken over at once; the lease columns on ``runs`` name the owner (host,
pid, since) and expire without a heartbeat, which is what a store shared by
many machines will rely on.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

from durabatch import events as history  # a module: events imports the store's records
from durabatch import money
from durabatch.artifacts import ArtifactStore
from durabatch.budget import PaidCall
from durabatch.clock import epoch, epoch_of, now_iso
from durabatch.errors import BudgetReached, Reason, RunOwnedError, StoreError, UsageError
from durabatch.models.base import CallRecord
from durabatch.money import from_pico, to_pico
from durabatch.pricing import Price, PriceBook
from durabatch.store import migrated, queries
from durabatch.store.cache import CacheReader, SQLiteCache
from durabatch.store.connection import (
    connect,
    create_private,
    damaged,
    damaged_error,
    write_error,
)
from durabatch.store.deliveries import SQLiteDeliveries
from durabatch.store.locks import RunLocks, pid_alive
from durabatch.store.reads import SQLiteReads
from durabatch.store.records import (
    Compaction,
    DocStatus,
    Document,
    NewDocument,
    Owner,
    Run,
    RunStatus,
    Step,
    StepFailure,
    StepResult,
    StepStatus,
    Work,
    delivers,
)

RENEW_LEASE = "UPDATE runs SET lease_expires = ? WHERE id = ? AND lease_session = ?"


class SQLiteStore(SQLiteReads, SQLiteCache, SQLiteDeliveries):
    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        # the engine swaps in the run's own book (its --price-provider and user prices)
        self.prices = PriceBook()
        self._targets: dict[str, bool] = {}  # run id -> has a deliver step
        if path.is_dir():
            raise UsageError(f"--db {path} is a folder; give a file: --db {path}/durabatch.db")
        if path.exists() and not path.is_file():  # a device, a FIFO: never opened, never chmodded
            raise UsageError(f"--db {path} is not a regular file; give a database file")
        if not path.exists():
            if not create:
                raise UsageError(
                    f"no durabatch database at {path}; start one with `durabatch run PATH` "
                    "or point --db at an existing one"
                )
            create_private(path)
        elif path.stat().st_size == 0:
            # a run killed as it made the file, or a file made empty beforehand: it becomes
            # an empty database (resume: nothing to resume), private like a new one
            create_private(path)
        self._batched = False
        # inside a batch: one time for its rows, and its events and model calls, inserted
        # as a few multi-row statements just before its COMMIT
        self._batch_at = ""
        self._deferred: dict[str, list[tuple[Any, ...]]] = {EVENT_ROW: [], CALL_ROW: []}
        # (doc_id, step) that may have calls written down in ``reservations`` by this
        # session; a step that made none skips looking for lost calls when it commits
        self._noted: set[tuple[int, str]] = set()
        self._settled: list[tuple[int, str]] = []  # leave _noted once the commit is made
        try:
            self.conn = connect(path)
            if not migrated.up_to_date(self.conn):
                self._migrate()
        except sqlite3.DatabaseError as exc:
            if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
                raise StoreError(
                    f"the disk holding {path} is read-only ({exc}); remount it read-write, "
                    "then `durabatch resume`"
                ) from exc
            if damaged(exc) or "locked" in str(exc):
                raise write_error(path, exc) from exc
            raise StoreError(
                f"cannot use database {path}: {exc}; check that it is a durabatch "
                "database on a writable disk"
            ) from exc
        # only once the file is known to be durabatch's: nothing is added beside another's
        self.files = path.parent / (path.name + ".d")
        # extracted text is the user's data: private like the database
        self.files.mkdir(mode=0o700, exist_ok=True)
        self.artifacts = ArtifactStore(self.files / "artifacts")
        self.locks = RunLocks(self.files / "locks")

    def _migrate(self) -> None:
        """A new database gets the whole schema at once; an older one, the migrations it
        lacks. Two processes opening a new database at once: the first makes it, the
        second waits for its write lock and then finds it up to date."""
        with self._tx():
            if migrated.up_to_date(self.conn):  # made by another process meanwhile
                return
            if migrated.empty(self.conn):
                migrated.create(self.conn)
                return
        from sqlite_utils import Database  # only here: see ``migrated``

        from durabatch.store.schema import migrations

        db = Database(self.conn)
        if migrations.pending(db):
            with self._tx():
                migrations.apply(db)

    def own_files(self) -> list[Path]:
        """The database, its journals and its folder: never documents to process."""
        suffixes = ("", "-wal", "-shm", "-journal")
        return [self.path.with_name(self.path.name + s) for s in suffixes] + [self.files]

    def reader(self, *, on_writer: bool = False) -> CacheReader:
        """The cache lookups on a connection of their own: one per worker thread; or
        (``on_writer``) on the writer's, for steps the writer's thread runs itself."""
        return CacheReader(self.path, self.conn if on_writer else None)

    def close(self) -> None:
        self.locks.drop_all()
        self.conn.close()

    # -- transactions and events ------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """The writes inside share one transaction, so one fsync: all commit, or none."""
        if self._batched:
            yield
            return
        with self._tx():
            self._batched, self._batch_at = True, now_iso()
            try:
                yield
                self._flush()
            finally:
                self._batched = False
                for rows in self._deferred.values():
                    rows.clear()

    def _at(self) -> str:
        return self._batch_at if self._batched else now_iso()

    def _insert(self, insert: str, row: tuple[Any, ...]) -> None:
        """One row into events or model_calls: now, or with the others at the batch's end
        (nothing reads those tables inside a batch)."""
        if self._batched:
            self._deferred[insert].append(row)
        else:
            self.conn.execute(f"{insert} ({', '.join('?' * len(row))})", row)

    def _flush(self) -> None:
        for insert, rows in self._deferred.items():
            for start in range(0, len(rows), ROWS_PER_INSERT):
                chunk = rows[start : start + ROWS_PER_INSERT]
                marks = f"({', '.join('?' * len(chunk[0]))})"
                params = [value for row in chunk for value in row]
                self.conn.execute(f"{insert} {', '.join([marks] * len(chunk))}", params)
            rows.clear()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """One write transaction (or a part of the batch around it). IMMEDIATE takes the
        write lock up front, so a second process waits out the busy timeout instead of
        failing when it reads, then writes."""
        if self._batched:
            yield
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise write_error(self.path, exc) from exc
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException as exc:
            self._settled.clear()  # rolled back: those reservations are still there
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) or damaged(exc):
                raise write_error(self.path, exc) from exc
            raise
        self._noted.difference_update(self._settled)
        self._settled.clear()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one consistent moment of the database, whatever writes go on;
        a damaged page met inside is a ``DatabaseDamaged`` (`verify` reports it)."""
        self.conn.execute("BEGIN")
        try:
            yield
        except BaseException as exc:
            self.conn.execute("ROLLBACK")  # nothing to keep; COMMIT fails after a damaged page
            if damaged(exc):
                raise damaged_error(self.path, exc) from exc
            raise
        self.conn.execute("COMMIT")

    def _event(
        self,
        run_id: str,
        type_: str,
        data: dict[str, Any],
        doc_id: int | None = None,
        step: str | None = None,
    ) -> None:
        row = (run_id, self._at(), type_, doc_id, step, queries.to_json(data))
        self._insert(EVENT_ROW, row)

    def _changed(self, cursor: sqlite3.Cursor, what: str) -> None:
        if cursor.rowcount != 1:
            raise StoreError(f"state changed under us while {what}; another process owns this run")

    # -- runs ---------------------------------------------------------------

    def create_run(self, settings: dict[str, Any], inputs: list[str]) -> Run:
        """A new run, locked by this process from its first moment; refused (exit 75) while
        a live process works on a run with the same models over any of the same files, so two
        overlapping cron jobs never process the same documents twice."""
        run_id = _new_run_id()
        now = now_iso()
        self.locks.take(run_id)
        try:
            with self._tx():
                self._refuse_overlap(settings, inputs)
                self.conn.execute(
                    "INSERT INTO runs (id, status, settings, inputs, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, RunStatus.RUNNING, json.dumps(settings), json.dumps(inputs), now,
                     now),
                )  # fmt: skip
                self._event(run_id, "run_created", {"settings": settings, "inputs": inputs})
        except BaseException:
            self.locks.drop(run_id)
            raise
        return self.get_run(run_id)

    def _refuse_overlap(self, settings: dict[str, Any], inputs: list[str]) -> None:
        """Another live run with the same models over any of the same files?"""
        mine = _places(settings, inputs)
        rows = self.conn.execute(
            "SELECT id, settings, inputs FROM runs WHERE status = ?", (RunStatus.RUNNING,)
        ).fetchall()
        for row in rows:
            theirs = json.loads(row["settings"])
            same_work = _work_of(theirs) == _work_of(settings)
            overlap = _overlap(mine, _places(theirs, json.loads(row["inputs"])))
            if same_work and overlap and self.locks.held_elsewhere(row["id"]):
                try:
                    self._refuse(row["id"])
                except RunOwnedError as owned:
                    owned.message = f"a run over the same files is in progress: {owned.message}"
                    raise

    def get_run(self, run_id: str) -> Run:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UsageError(f"no run {run_id!r} in {self.path}; `durabatch status` lists the runs")
        return queries.run_from_row(row)

    def change_settings(self, run_id: str, changes: dict[str, Any]) -> Run:
        """Change a run's stored settings (e.g. a raised budget), with an event."""
        with self._tx():
            run = self.get_run(run_id)
            self.conn.execute(
                "UPDATE runs SET settings = ?, updated_at = ? WHERE id = ?",
                (json.dumps(run.settings | changes), now_iso(), run_id),
            )
            self._event(run_id, "settings_changed", changes)
        return self.get_run(run_id)

    def latest_unfinished_run(self) -> Run | None:
        row = self.conn.execute(
            "SELECT * FROM runs WHERE status NOT IN (?, ?) AND cancel_requested = 0"
            " ORDER BY created_at DESC, id DESC LIMIT 1",
            (RunStatus.DONE, RunStatus.CANCELLED),
        ).fetchone()
        return None if row is None else queries.run_from_row(row)

    def list_runs(self) -> list[Run]:
        rows = self.conn.execute("SELECT * FROM runs ORDER BY created_at, id").fetchall()
        return [queries.run_from_row(row) for row in rows]

    # -- discovery ----------------------------------------------------------

    def add_documents(self, run_id: str, docs: Sequence[NewDocument]) -> int:
        """Add newly discovered documents; ones already known are ignored (rediscovery)."""
        added = 0
        with self._tx():
            (next_seq,) = self.conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM documents WHERE run_id = ?", (run_id,)
            ).fetchone()
            for doc in docs:
                cursor = self.conn.execute(
                    "INSERT OR IGNORE INTO documents (run_id, seq, path, source, size, status,"
                    " step, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, next_seq, doc.path, doc.source, doc.size, DocStatus.PENDING,
                     Step.EXTRACT, now_iso()),
                )  # fmt: skip
                if cursor.rowcount == 1:
                    data = {"seq": next_seq, "path": doc.path, "source": doc.source,
                            "size": doc.size}  # fmt: skip
                    self._event(run_id, "document_discovered", data, cursor.lastrowid)
                    next_seq += 1
                    added += 1
        return added

    def finish_discovery(self, run_id: str) -> None:
        with self._tx():
            cursor = self.conn.execute(
                "UPDATE runs SET discovered = 1, updated_at = ? WHERE id = ? AND discovered = 0",
                (now_iso(), run_id),
            )
            self._changed(cursor, "finishing discovery")
            (total,) = self.conn.execute(
                "SELECT COUNT(*) FROM documents WHERE run_id = ?", (run_id,)
            ).fetchone()
            self._event(run_id, "discovery_finished", {"total": total})

    # -- compaction ----------------------------------------------------------

    def compact(self, run_id: str, *, vacuum: bool = False) -> Compaction:
        """Fold every event of a run into one ``snapshot`` event carrying the state they
        establish, in one transaction; the snapshot takes the last folded event's seq, so
        ``events --after`` cursors stay valid. Refused (exit 75) while a live process owns
        the run: the run lock is held throughout, so no resume can start meanwhile.
        ``vacuum`` gives the freed pages back to the disk (it rewrites the whole file)."""
        self.get_run(run_id)
        before = self._file_bytes()
        if not self.locks.take(run_id):
            self._refuse_compaction(run_id)
        try:
            if self.owner_of(run_id) is not None:  # a lease another machine still renews
                self._refuse_compaction(run_id)
            # compacting holds the write lock for seconds at 100,000 documents: longer than
            # a live run of this database waits for it (it would halt)
            for other in self.list_runs():
                if other.id != run_id and self.owner_of(other.id) is not None:
                    self._refuse_compaction(other.id, busy=run_id)
            with self._tx():
                count, last = self.conn.execute(
                    "SELECT COUNT(*), MAX(seq) FROM events WHERE run_id = ?", (run_id,)
                ).fetchone()
                if count > 1:
                    self._fold(run_id, count, last)
        finally:
            self.locks.drop(run_id)
        if vacuum:
            self.conn.execute("VACUUM")
        # the rewritten pages move from the WAL into the file, so its size before and
        # after compares like with like (the WAL counted twice made the file "grow")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        folded = count if count > 1 else 0
        return Compaction(run_id, folded, count, count - folded + (1 if folded else 0),
                          last if folded else None, before, self._file_bytes())  # fmt: skip

    def _fold(self, run_id: str, count: int, last: int) -> None:
        state = history.replay(self.events(run_id))
        row = self.conn.execute("SELECT at FROM events WHERE seq = ?", (last,)).fetchone()
        # the only deletion the history allows: the guard is lifted inside this transaction
        # alone, so a crash midway leaves the events (and the guard) as they were
        self.conn.execute("DROP TRIGGER events_no_delete")
        self.conn.execute("DELETE FROM events WHERE run_id = ?", (run_id,))
        self.conn.execute(migrated.EVENTS_NO_DELETE)
        self.conn.execute(
            "INSERT INTO events (seq, run_id, at, type, doc_id, step, data)"
            " VALUES (?, ?, ?, 'snapshot', NULL, NULL, ?)",
            (last, run_id, row["at"],
             queries.to_json(history.snapshot_data(state, count))),
        )  # fmt: skip

    def _refuse_compaction(self, run_id: str, busy: str | None = None) -> None:
        """Refuse while ``run_id`` is processed: it is the run to compact, or (``busy``
        names that one) another run of this database."""
        try:
            self._refuse(run_id)
        except RunOwnedError as owned:
            by = f"{'pid ' + str(owned.pid) if owned.pid else 'another process'} on {owned.host}"
            owned.message = (
                f"cannot compact run {run_id} while it is processed by {by} (since "
                f"{owned.since}); compact it after that process has finished or stopped"
                if busy is None
                else f"cannot compact run {busy} while run {run_id} of the same database is "
                f"processed by {by} (since {owned.since}): compacting locks the database for "
                "longer than that run would wait; compact when no run is being processed"
            )
            raise

    def _file_bytes(self) -> int:
        files = (self.path, self.path.with_name(self.path.name + "-wal"))
        return sum(f.stat().st_size for f in files if f.exists())

    # -- ownership ----------------------------------------------------------

    def owner_of(self, run_id: str) -> Owner | None:
        """The live owner of a run, or None. Reads only: never touches the lock."""
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or row["lease_session"] is None or row["lease_expires"] < epoch():
            return None
        if row["lease_host"] == socket.gethostname() and not pid_alive(row["lease_pid"]):
            return None  # killed before its lease expired
        return queries.owner_from_row(row)

    def acquire(self, run_id: str, ttl: float, *, side: bool = False) -> Owner:
        """Become the one owner of a run; take over from a dead one; recover its work.

        ``side``: a session that only delivers or withdraws (not one that processes
        documents) keeps the run's status: a cancelled run killed mid-compensation stays
        cancelled, a finished one stays finished."""
        if not self.locks.take(run_id):
            self._refuse(run_id)
        host, pid = socket.gethostname(), os.getpid()
        owner = Owner(uuid.uuid4().hex, host, pid, now_iso())
        try:
            with self._tx():
                row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
                if (
                    row["lease_session"]
                    and row["lease_host"] != host
                    and (row["lease_expires"] > epoch())
                ):
                    self._refuse(run_id)
                self.conn.execute(
                    "UPDATE runs SET status = ?, lease_session = ?, lease_host = ?, lease_pid = ?,"
                    " lease_since = ?, lease_expires = ?, updated_at = ? WHERE id = ?",
                    (row["status"] if side else RunStatus.RUNNING, owner.session_id, host, pid,
                     owner.since, epoch() + ttl, owner.since, run_id),
                )  # fmt: skip
                self._recover(run_id)
                self.conn.execute(
                    "INSERT INTO sessions (id, run_id, host, pid, started_at) VALUES (?,?,?,?,?)",
                    (owner.session_id, run_id, host, pid, owner.since),
                )
                data: dict[str, Any] = {"session": owner.session_id, "host": host, "pid": pid}
                if side:
                    data["side"] = True
                self._event(run_id, "session_started", data)
        except BaseException:
            self.locks.drop(run_id)
            raise
        return owner

    def _refuse(self, run_id: str) -> None:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row["lease_session"] is None:  # the owner has the lock but has not written yet
            raise RunOwnedError(run_id, socket.gethostname(), self.locks.holder(run_id), "just now")
        raise RunOwnedError(run_id, row["lease_host"], row["lease_pid"], row["lease_since"])

    def _recover(self, run_id: str) -> None:
        """Close sessions that died without ending; put their in-flight steps back."""
        lost = self.conn.execute(
            "SELECT id FROM sessions WHERE run_id = ? AND ended_at IS NULL", (run_id,)
        ).fetchall()
        for (session_id,) in lost:
            self.conn.execute(
                "UPDATE sessions SET ended_at = ?, outcome = 'lost' WHERE id = ?",
                (now_iso(), session_id),
            )
            self.conn.execute(
                "UPDATE runs SET interruptions = interruptions + 1 WHERE id = ?", (run_id,)
            )
            self._event(run_id, "session_lost", {"session": session_id})
        running = self.conn.execute(
            "SELECT s.doc_id, s.step, s.attempts FROM steps s JOIN documents d ON d.id = s.doc_id"
            " WHERE d.run_id = ? AND d.status = ? AND s.status = ?",
            (run_id, DocStatus.RUNNING, StepStatus.RUNNING),
        ).fetchall()
        for doc_id, step, attempt in running:
            self._abandon(run_id, doc_id, step, attempt, "owner died")
        # the calls the dead owner had in flight are now failed attempts; no hold remains
        self.conn.execute("DELETE FROM reservations WHERE run_id = ?", (run_id,))

    def inline_text(self, digest: str) -> str | None:
        """Extracted text the database holds (small texts are not files)."""
        row = self.conn.execute("SELECT text FROM texts WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else str(row[0])

    def save_extraction(self, cache_key: str, sha256: str, path: str, output: Any,
                        artifact: str) -> None:  # fmt: skip
        with self._tx():
            self.conn.execute(
                "INSERT OR REPLACE INTO extractions (key, sha256, path, output, artifact, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (cache_key, sha256, path, json.dumps(output), artifact, now_iso()),
            )

    def reserve(self, owner: Owner, work: Work, call: PaidCall, amount: Decimal | None,
                limit: Decimal | None) -> Decimal:  # fmt: skip
        """Write a paid call down before it is made, holding its worst case ``amount``;
        under a budget (``limit``), refuse it (BudgetReached) when what is spent and held
        would pass the limit. Returns what was spent and held before this call."""
        doc = work.document
        with self._tx():
            self._check_running(owner, work)
            if limit is None:
                self._note_call(work, call, amount, capped=False)
                return Decimal(0)
            (held,) = self.conn.execute(
                "SELECT (SELECT COALESCE(SUM(cost_pico), 0) FROM model_calls WHERE run_id = ?)"
                " + (SELECT COALESCE(SUM(amount_pico), 0) FROM reservations WHERE run_id = ?)",
                (doc.run_id, doc.run_id),
            ).fetchone()
            committed = from_pico(held) or Decimal(0)
            assert amount is not None, "a budget needs the call's worst case"
            if committed + amount > limit:
                raised = _next_budget(max(limit * 2, committed + amount))
                left = max(limit - committed, Decimal(0))
                raise BudgetReached(
                    f"the budget of ${limit:g} is reached: ${money.digits(committed)} spent or "
                    f"held, ${money.digits(left)} left, and the next call could cost up to "
                    f"${money.digits(amount)}; raise it to continue: "
                    f"`durabatch resume {doc.run_id} --max-cost {raised}`"
                )
            self._note_call(work, call, amount, capped=True)
        return committed

    def _note_call(self, work: Work, call: PaidCall, amount: Decimal | None,
                   capped: bool) -> None:  # fmt: skip
        """``capped``: under a budget every call carries ``max_tokens`` (so it has a worst
        case, and should its answer never come back, it is recorded at that worst case)."""
        doc = work.document
        self._noted.add((doc.id, work.step))
        self.conn.execute(
            "INSERT INTO reservations (run_id, doc_id, step, amount_pico, at, provider, host,"
            " model, input_tokens, most_input_tokens, max_tokens)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (doc.run_id, doc.id, work.step, to_pico(amount), now_iso(), call.engine, call.host,
             call.model, call.input_tokens, call.most_input_tokens,
             call.max_output_tokens if capped else None),
        )  # fmt: skip

    def heartbeat(self, run_id: str, owner: Owner, ttl: float) -> None:
        with self._tx():
            cursor = self.conn.execute(RENEW_LEASE, (epoch() + ttl, run_id, owner.session_id))
            self._changed(cursor, "renewing the lease")

    @contextlib.contextmanager
    def kept_alive(self, run_id: str, owner: Owner, ttl: float) -> Iterator[None]:
        """Renew the lease every third of ``ttl`` from a thread and a connection of its
        own while the body runs: a re-delivery or a withdrawal goes one document at a
        time, each a network call that may take longer than the lease, and a lapsed
        lease tells `cancel` and `status` that nobody owns the run."""
        stop = threading.Event()

        def renew() -> None:
            conn: sqlite3.Connection | None = None
            try:
                conn = connect(self.path)
                while not stop.wait(ttl / 3):
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(RENEW_LEASE, (epoch() + ttl, run_id, owner.session_id))
                    conn.execute("COMMIT")
            except sqlite3.Error:
                pass  # the body's own writes meet the same trouble and report it
            finally:
                if conn is not None:
                    conn.close()

        keeper = threading.Thread(target=renew, name="durabatch-lease", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join()

    def release(self, run_id: str, owner: Owner, status: RunStatus, outcome: str) -> None:
        """End the session: the run becomes ``status``; an interrupted run counts one more."""
        interrupted = status in (RunStatus.INTERRUPTED, RunStatus.HALTED, RunStatus.PAUSED)
        with self._tx():
            cursor = self.conn.execute(
                "UPDATE runs SET status = ?, interruptions = interruptions + ?, updated_at = ?,"
                " lease_session = NULL, lease_host = NULL, lease_pid = NULL, lease_since = NULL,"
                " lease_expires = NULL WHERE id = ? AND lease_session = ?",
                (status, int(interrupted), now_iso(), run_id, owner.session_id),
            )
            self._changed(cursor, "releasing the run")
            self.conn.execute(
                "UPDATE sessions SET ended_at = ?, outcome = ? WHERE id = ?",
                (now_iso(), outcome, owner.session_id),
            )
            if status == RunStatus.CANCELLED:
                self.skip_unfinished(run_id)
            data = {"session": owner.session_id, "outcome": outcome, "status": status,
                    "interrupted": interrupted}  # fmt: skip
            self._event(run_id, "session_ended", data)
        self.locks.drop(run_id)

    # -- work -----------------------------------------------------------------

    def pending_documents(self, run_id: str, limit: int) -> list[Document]:
        rows = self.conn.execute(
            "SELECT * FROM documents WHERE run_id = ? AND status = ? ORDER BY seq LIMIT ?",
            (run_id, DocStatus.PENDING, limit),
        ).fetchall()
        return [queries.document_from_row(row) for row in rows]

    def start_steps(self, owner: Owner, docs: Sequence[Document]) -> list[Work]:
        """Claim the current step of each pending document, in one transaction."""
        with self._tx():
            return [self._start(owner, doc, doc.step or Step.EXTRACT) for doc in docs]

    def _start(self, owner: Owner, doc: Document, step: Step, sha256: str | None = None,
               text: tuple[str | None, str | None] | None = None) -> Work:  # fmt: skip
        """Claim ``step`` of ``doc``; ``sha256``: its content hash, just found by extract;
        ``text``: the extracted text's (artifact, text) as the caller knows it, when this
        session has just completed the document's step before (its file is in hand)."""
        now = self._at()
        # SQLite rewrites an index entry whenever a column it holds is SET, even to the same
        # value: a document already running keeps its status (and must still be running),
        # a hash already known stays
        changes: dict[str, Any] = {"step": step, "updated_at": now}
        running = doc.status == DocStatus.RUNNING
        if not running:
            changes["status"] = DocStatus.RUNNING
        if sha256 is not None:
            changes["sha256"] = sha256
        cursor = self.conn.execute(
            f"UPDATE documents SET {', '.join(f'{column} = ?' for column in changes)}"
            " WHERE id = ? AND status IN (?, ?)",
            (*changes.values(), doc.id, DocStatus.RUNNING if running else DocStatus.PENDING,
             DocStatus.RUNNING),
        )  # fmt: skip
        self._changed(cursor, f"starting {step} of {doc.path}")
        row = (doc.id, step, StepStatus.RUNNING, owner.session_id, now)
        # an extraction, or a step claimed in the commit that completed the one before:
        # on its first attempt (its row is new) what its work needs is known, not read back
        if step == Step.EXTRACT or (text is not None and step != Step.DELIVER):
            cursor = self.conn.execute(f"{START_STEP} ON CONFLICT (doc_id, step) DO NOTHING", row)
            if cursor.rowcount == 1:
                found = (
                    doc
                    if running and sha256 in (None, doc.sha256)
                    else replace(doc, sha256=sha256 or doc.sha256, status=DocStatus.RUNNING)
                )
                artifact, extracted = text or (None, None)
                self._event(doc.run_id, "step_started", {"attempt": 1,
                            "session": owner.session_id}, doc.id, step)  # fmt: skip
                return Work(found, step, 1, text_artifact=artifact, text=extracted)
        cursor = self.conn.execute(
            f"{START_STEP} ON CONFLICT (doc_id, step) DO UPDATE SET"
            " status = excluded.status, attempts = attempts + 1,"
            " session_id = excluded.session_id, started_at = excluded.started_at"
            " WHERE steps.status IN (?, ?)",
            (*row, StepStatus.ABANDONED, StepStatus.FAILED),
        )  # fmt: skip
        self._changed(cursor, f"starting {step} of {doc.path}")
        return self._work(owner, doc, step)

    def _work(self, owner: Owner, doc: Document, step: Step) -> Work:
        # one row: this step's attempt, the extracted text, the content hash as it is now
        # ... and whether this session already had the document in hand (it read or checked
        # the file then): only its first step here needs to check the file again
        attempt, artifact, text, sha256, seen_here = self.conn.execute(
            "SELECT s.attempts, x.artifact, t.text, d.sha256, (SELECT COUNT(*) FROM steps y"
            "  WHERE y.doc_id = s.doc_id AND y.step != s.step AND y.session_id = ?)"
            " FROM steps s JOIN documents d ON d.id = s.doc_id"
            " LEFT JOIN steps x ON x.doc_id = s.doc_id AND x.step = ?"
            " LEFT JOIN texts t ON t.digest = x.artifact"
            " WHERE s.doc_id = ? AND s.step = ?",
            (owner.session_id, Step.EXTRACT, doc.id, step),
        ).fetchone()
        self._event(doc.run_id, "step_started", {"attempt": attempt, "session": owner.session_id},
                    doc.id, step)  # fmt: skip
        # only an earlier attempt of this step can have left partial results
        partials = self.conn.execute(
            "SELECT output FROM partials WHERE doc_id = ? AND step = ? ORDER BY idx",
            (doc.id, step),
        ).fetchall() if attempt > 1 else []  # fmt: skip
        return Work(
            document=replace(doc, sha256=sha256, status=DocStatus.RUNNING),
            step=step,
            attempt=attempt,
            text_artifact=artifact,
            text=text,
            partials=tuple(json.loads(row[0]) for row in partials),
            recheck=step != Step.EXTRACT and not seen_here,
            results=self.results(doc.id) if step == Step.DELIVER else {},
            earlier=tuple(self.deliveries_of(doc.id)) if step == Step.DELIVER else (),
        )

    def results(self, doc_id: int) -> dict[str, Any]:
        """What the deliver step publishes: the outputs of the document's model steps."""
        rows = self.conn.execute(
            "SELECT step, output FROM steps WHERE doc_id = ? AND status = ? AND step != ?",
            (doc_id, StepStatus.DONE, Step.DELIVER),
        ).fetchall()
        return {row["step"]: json.loads(row["output"]) for row in rows}

    def _delivers(self, run_id: str) -> bool:
        """Does the run end each document with a deliver step (it was given a target)?"""
        if run_id not in self._targets:
            self._targets[run_id] = delivers(self.get_run(run_id).settings)
        return self._targets[run_id]

    def restart_document(self, owner: Owner, work: Work, sha256: str | None) -> None:
        """The file changed since its text was extracted: what was done with the old
        content is history (its calls become waste); the document starts again."""
        doc = work.document
        with self._tx():
            self._check_running(owner, work)
            for table in ("partials", "steps", "reservations"):
                self.conn.execute(f"DELETE FROM {table} WHERE doc_id = ?", (doc.id,))
            self.conn.execute("UPDATE model_calls SET kept = 0 WHERE doc_id = ?", (doc.id,))
            self.conn.execute(
                "UPDATE documents SET status = ?, step = ?, sha256 = NULL, updated_at = ?"
                " WHERE id = ?",
                (DocStatus.PENDING, Step.EXTRACT, now_iso(), doc.id),
            )
            data = {"old_sha256": doc.sha256, "new_sha256": sha256, "at_step": work.step}
            self._event(doc.run_id, "document_changed", data, doc.id)

    def save_partial(self, owner: Owner, work: Work, index: int, output: Any,
                     calls: Sequence[CallRecord]) -> None:  # fmt: skip
        """Checkpoint one chunk of a long document, so a crash loses one call, not all."""
        doc = work.document
        with self._tx():
            self._check_running(owner, work)
            self.conn.execute(
                "INSERT INTO partials (doc_id, step, idx, output) VALUES (?, ?, ?, ?)",
                (doc.id, work.step, index, queries.to_json(output)),
            )
            cost = self._record_calls(work, calls, kept=True)
            data = {"index": index, "output": output, **cost}
            self._event(doc.run_id, "partial_saved", data, doc.id, work.step)

    def _check_running(self, owner: Owner, work: Work) -> None:
        row = self.conn.execute(
            "SELECT status, session_id FROM steps WHERE doc_id = ? AND step = ?",
            (work.document.id, work.step),
        ).fetchone()
        if row is None or row[0] != StepStatus.RUNNING or row[1] != owner.session_id:
            raise StoreError(f"{work.step} of {work.document.path} is no longer ours")

    def _record_calls(
        self, work: Work, calls: Sequence[CallRecord], *, kept: bool = False
    ) -> dict[str, Any]:
        """Insert one row per model call; add their tokens and dollars to the step.

        ``kept``: the answers are being committed; a failed attempt never is."""
        doc = work.document
        return self._record(doc.run_id, doc.id, work.step, work.attempt, calls, kept)

    def _record(self, run_id: str, doc_id: int, step: str, attempt: int,
                returned: Sequence[CallRecord], kept: bool) -> dict[str, Any]:  # fmt: skip
        tokens, spent = self._insert_calls(run_id, doc_id, step, attempt, returned, kept)
        self.conn.execute(
            "UPDATE steps SET input_tokens = input_tokens + ?, output_tokens = output_tokens + ?,"
            " cost_pico = COALESCE(cost_pico, 0) + ?, unpriced_calls = unpriced_calls + ?"
            " WHERE doc_id = ? AND step = ?",
            (tokens["input_tokens"], tokens["output_tokens"], spent,
             tokens["unpriced_calls"], doc_id, step),
        )  # fmt: skip
        return {**tokens, "cost_usd": money.text(from_pico(spent))}

    def _insert_calls(self, run_id: str, doc_id: int, step: str, attempt: int,
                      returned: Sequence[CallRecord], kept: bool,
                      mine: bool = False) -> tuple[dict[str, int], int]:  # fmt: skip
        """One row per model call, and the calls lost in flight; their tokens and dollars.

        ``mine``: the step ran in this session, so only calls it noted can be lost."""
        tokens = {"input_tokens": 0, "output_tokens": 0, "unpriced_calls": 0}
        spent = 0
        # the step's real costs replace its reservations in this same transaction
        noted = not mine or (doc_id, step) in self._noted
        lost = self._lost_calls(doc_id, step, len(returned)) if noted else []
        calls = [*returned, *lost]
        for call in calls:
            price = self.prices.price(call.provider, call.host, call.model)
            exact = (
                price.cost(call.input_tokens, call.output_tokens, call.cached_tokens)
                if price
                else None
            )
            cost = to_pico(exact)
            self._insert(CALL_ROW, (run_id, doc_id, step, attempt, call.provider, call.model,
                         call.input_tokens, call.output_tokens, cost, call.latency_ms,
                         call.http_status, call.error, self._at(), call.host, call.retry,
                         call.error_class, int(kept and call.ok), call.cached_tokens,
                         *_rates(price)))  # fmt: skip
            tokens["input_tokens"] += call.input_tokens
            tokens["output_tokens"] += call.output_tokens
            if cost is None:
                tokens["unpriced_calls"] += 1
            else:
                spent += cost
        return tokens, spent

    def _lost_calls(self, doc_id: int, step: str, returned: int) -> list[CallRecord]:
        """Calls written down before they were made whose answer never came back (the
        process died, or a drain gave up on them): they may have been paid, so they are
        kept as failed attempts. A call that carried ``max_tokens`` (every call under a
        budget) is recorded at its worst case, what was held for it: the prompt at one
        token per byte and every output token it asked for. Without a cap there is no
        worst case: the prompt's estimated tokens, and no output."""
        self._settled.append((doc_id, step))
        noted = self.conn.execute(
            "SELECT provider, host, model, input_tokens, most_input_tokens, max_tokens, at"
            " FROM reservations WHERE doc_id = ? AND step = ? ORDER BY id",
            (doc_id, step),
        ).fetchall()
        self.conn.execute("DELETE FROM reservations WHERE doc_id = ? AND step = ?", (doc_id, step))
        # older databases noted no call details
        return [_lost(row) for row in noted[returned:] if row["provider"] is not None]

    def complete_step(
        self, owner: Owner, work: Work, result: StepResult, *, claim_next: bool = True
    ) -> Work | None:
        """Commit a step's result; claim the next step (or leave it pending), or finish."""
        doc = work.document
        with self._tx():
            tokens, spent = self._insert_calls(doc.run_id, doc.id, work.step, work.attempt,
                                               result.calls, kept=True, mine=True)  # fmt: skip
            cost = {**tokens, "cost_usd": money.text(from_pico(spent))}
            # the step's spend is added in the same statement that marks it done
            cursor = self.conn.execute(
                "UPDATE steps SET status = ?, output = ?, artifact = ?, completed_at = ?,"
                " cache_key = ?, cached_from = ?, saved_pico = ?, input_tokens = input_tokens + ?,"
                " output_tokens = output_tokens + ?, cost_pico = COALESCE(cost_pico, 0) + ?,"
                " unpriced_calls = unpriced_calls + ?"
                " WHERE doc_id = ? AND step = ? AND status = ? AND session_id = ?",
                (StepStatus.DONE, queries.to_json(result.output), result.artifact,
                 self._at(), result.cache_key, result.cached_from, to_pico(result.saved_usd),
                 tokens["input_tokens"], tokens["output_tokens"], spent,
                 tokens["unpriced_calls"], doc.id, work.step, StepStatus.RUNNING,
                 owner.session_id),
            )  # fmt: skip
            self._changed(cursor, f"completing {work.step} of {doc.path}")
            following = work.step.next(deliver=self._delivers(doc.run_id))
            if result.sha256 is not None and (following is None or not claim_next):
                self.conn.execute(
                    "UPDATE documents SET sha256 = ? WHERE id = ?", (result.sha256, doc.id)
                )
            if result.text is not None:
                self.conn.execute(
                    "INSERT OR IGNORE INTO texts (digest, text) VALUES (?, ?)",
                    (result.artifact, result.text),
                )
            data = {"attempt": work.attempt, "output": result.output,
                    "artifact": result.artifact, "sha256": result.sha256, **cost,
                    "cache_key": result.cache_key, "cached_from": result.cached_from,
                    "saved_usd": money.text(result.saved_usd)}  # fmt: skip
            self._event(doc.run_id, "step_completed", data, doc.id, work.step)
            if result.delivery is not None:
                self._add_delivery(doc.run_id, doc.id, result.delivery)
            if following is None:
                self._finish(doc, None, DocStatus.DONE, None, None)
                return None
            if not claim_next:
                self.conn.execute(
                    "UPDATE documents SET status = ?, step = ?, updated_at = ? WHERE id = ?",
                    (DocStatus.PENDING, following, self._at(), doc.id),
                )
                return None
            return self._start(owner, doc, following, result.sha256, self._text_after(work, result))

    @staticmethod
    def _text_after(work: Work, result: StepResult) -> tuple[str | None, str | None] | None:
        """The extracted text's (artifact, text) for the step after ``work``, as its
        result or its own work holds it; None when extract's result has no text itself:
        it is in a file of its own, or reused from an earlier extraction (in the database,
        not in the result), and the claim reads it back."""
        if work.step != Step.EXTRACT:
            return work.text_artifact, work.text
        if result.text is None and result.artifact is not None:
            return None
        return result.artifact, result.text

    def fail_step(self, owner: Owner, work: Work, failure: StepFailure) -> None:
        """Record a failed attempt; a terminal one ends the document failed or skipped."""
        doc = work.document
        now = now_iso()
        with self._tx():
            cost = self._record_calls(work, failure.calls)
            cursor = self.conn.execute(
                "UPDATE steps SET status = ? WHERE doc_id = ? AND step = ? AND status = ?"
                " AND session_id = ?",
                (StepStatus.FAILED, doc.id, work.step, StepStatus.RUNNING, owner.session_id),
            )
            self._changed(cursor, f"failing {work.step} of {doc.path}")
            self.conn.execute(
                "INSERT INTO failures (doc_id, step, attempt, error_class, reason, message, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (doc.id, work.step, work.attempt, failure.error_class, failure.reason,
                 failure.message, now),
            )  # fmt: skip
            data = {"attempt": work.attempt, "error_class": failure.error_class,
                    "reason": failure.reason, "message": failure.message,
                    "terminal": failure.terminal, **cost}  # fmt: skip
            self._event(doc.run_id, "step_failed", data, doc.id, work.step)
            if work.step == Step.DELIVER and failure.reason != Reason.ERROR:
                # the target said no (a DocumentError): nothing was delivered
                self._refuse_delivery(doc.run_id, doc.id, failure.message)
            if failure.terminal:
                status = DocStatus.SKIPPED if failure.skipped else DocStatus.FAILED
                self._finish(doc, work.step, status, failure.reason, failure.message)
            else:
                self._set_doc(doc.id, DocStatus.PENDING)

    def abandon(self, owner: Owner, works: Sequence[Work], why: str,
                calls: Sequence[CallRecord] = (), *, refused: bool = False) -> None:  # fmt: skip
        """Give back steps that were in flight when the session stopped.

        ``calls`` are the attempts the (single) abandoned step had made: a paused or
        halted run still records what they cost. ``refused``: a deliver step the receiver
        answered without taking it; its delivery is ``refused`` in the same transaction."""
        with self._tx():
            for work in works:
                self._check_running(owner, work)
                cost = self._record_calls(work, calls) if calls else None
                doc = work.document
                if refused and work.step == Step.DELIVER:
                    self._refuse_delivery(doc.run_id, doc.id, why)
                self._abandon(doc.run_id, doc.id, work.step, work.attempt, why, cost)

    def _abandon(self, run_id: str, doc_id: int, step: str, attempt: int, why: str,
                 cost: dict[str, Any] | None = None) -> None:  # fmt: skip
        if (
            cost is None
            and self.conn.execute(
                "SELECT 1 FROM reservations WHERE doc_id = ? AND step = ?", (doc_id, step)
            ).fetchone()
        ):
            cost = self._record(run_id, doc_id, step, attempt, (), kept=False)
        self.conn.execute(
            "UPDATE steps SET status = ? WHERE doc_id = ? AND step = ?",
            (StepStatus.ABANDONED, doc_id, step),
        )
        self._set_doc(doc_id, DocStatus.PENDING)
        data = {"attempt": attempt, "why": why, **(cost or {})}
        self._event(run_id, "step_abandoned", data, doc_id, step)

    def skip_unfinished(self, run_id: str, *, in_flight: bool = True) -> None:
        """A cancelled run is never resumed: each document it had not finished ends
        ``skipped`` (``cancelled``), so every document of every run ends in a final state.
        Inside the transaction that makes the run cancelled. Without ``in_flight``, only
        the documents no step of which is in flight: a killed owner's steps are put back
        (their calls counted as lost) only by a session that takes the run over."""
        statuses = (DocStatus.PENDING, DocStatus.RUNNING if in_flight else DocStatus.PENDING)
        unfinished = (run_id, *statuses)
        where = "WHERE run_id = ? AND status IN (?, ?)"
        ids = [row[0] for row in self.conn.execute(f"SELECT id FROM documents {where}",
                                                   unfinished)]  # fmt: skip
        if not ids:
            return
        why = "the run was cancelled before this document was finished; start a new run for it"
        self.conn.execute(
            f"UPDATE documents SET status = ?, reason = ?, error = ?, updated_at = ? {where}",
            (DocStatus.SKIPPED, Reason.CANCELLED, why, self._at(), *unfinished),
        )
        data = {"status": DocStatus.SKIPPED, "reason": Reason.CANCELLED, "error": why}
        for doc_id in ids:
            self._event(run_id, "document_finished", data, doc_id)

    def _set_doc(self, doc_id: int, status: DocStatus) -> None:
        self.conn.execute(
            "UPDATE documents SET status = ?, updated_at = ? WHERE id = ?",
            (status, self._at(), doc_id),
        )

    def _finish(self, doc: Document, step: Step | None, status: DocStatus, reason: str | None,
                error: str | None) -> None:  # fmt: skip
        self.conn.execute(
            "UPDATE documents SET status = ?, step = ?, reason = ?, error = ?, updated_at = ?"
            " WHERE id = ?",
            (status, step, reason, error, self._at(), doc.id),
        )
        data = {"status": status, "reason": reason, "error": error}
        self._event(doc.run_id, "document_finished", data, doc.id)


START_STEP = (
    "INSERT INTO steps (doc_id, step, status, attempts, session_id, started_at)"
    " VALUES (?, ?, ?, 1, ?, ?)"
)
EVENT_ROW = "INSERT INTO events (run_id, at, type, doc_id, step, data) VALUES"
CALL_ROW = (
    "INSERT INTO model_calls (run_id, doc_id, step, attempt, provider, model, input_tokens,"
    " output_tokens, cost_pico, latency_ms, http_status, error, at, host, retry, error_class,"
    " kept, cached_tokens, input_price, output_price, cached_price, price_source) VALUES"
)
ROWS_PER_INSERT = 200  # 22 values a row: well under SQLite's 32,766 parameters
LOST_IN_FLIGHT = (
    "lost in flight: the process stopped before the answer came back; the call may "
    "have been paid (input tokens estimated from the prompt, output unknown)"
)
LOST_AT_WORST = (
    "lost in flight: the process stopped before the answer came back; the call may "
    "have been paid, so it counts at its worst case, an upper bound (one input token "
    "per prompt byte, and every output token it asked for with max_tokens)"
)


def _lost(row: sqlite3.Row) -> CallRecord:
    """A call noted in ``reservations`` whose answer never came back, as a failed attempt."""
    latency_ms = max(0.0, (epoch() - epoch_of(row["at"])) * 1000)
    if row["max_tokens"] is not None and row["most_input_tokens"] is not None:
        return CallRecord(row["provider"], row["model"], row["most_input_tokens"],
                          row["max_tokens"], latency_ms=latency_ms, error=LOST_AT_WORST,
                          error_class="LostInFlight", host=row["host"])  # fmt: skip
    return CallRecord(row["provider"], row["model"], row["input_tokens"] or 0, 0,
                      latency_ms=latency_ms, error=LOST_IN_FLIGHT, error_class="LostInFlight",
                      host=row["host"])  # fmt: skip


def _rates(price: Price | None) -> tuple[str | None, str | None, str | None, str | None]:
    """The unit prices a call was charged at, as exact decimal text, and their source."""
    if price is None:
        return None, None, None, "unknown price"
    rates = (price.input, price.output, price.cached_input)
    return (*(None if r is None else str(r) for r in rates), price.source)  # type: ignore[return-value]


# runs that differ in these do different work on the same files, and may run side by side
def _work_of(settings: dict[str, Any]) -> tuple[Any, ...]:
    """What a run asks of which model, however it was typed: the endpoint without its
    trailing slash, and each step's model as ``Settings.model_for`` picks it."""
    model = settings.get("model") or settings.get("provider")
    endpoint = (settings.get("base_url") or "").rstrip("/")
    steps = (settings.get("summarize_model") or model, settings.get("entities_model") or model)
    return (settings.get("provider"), endpoint, *steps)


def _places(settings: dict[str, Any], inputs: list[str]) -> list[str]:
    """The paths a run was given, absolute and with links resolved, however typed."""
    base = settings.get("cwd") or "."
    return [os.path.realpath(os.path.join(base, given)) for given in inputs]


def _overlap(mine: list[str], theirs: list[str]) -> bool:
    def inside(path: str, folder: str) -> bool:
        return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)

    return any(inside(a, b) or inside(b, a) for a in mine for b in theirs)


def _next_budget(needed: Decimal) -> str:
    """A budget that lets at least the refused call through, in whole cents."""
    return f"{needed.quantize(Decimal('0.01'), rounding=ROUND_CEILING):f}"


def _new_run_id() -> str:
    stamp = now_iso().replace("-", "").replace(":", "")[:15]  # 20261126T173512
    return f"{stamp}-{uuid.uuid4().hex[:6]}"
