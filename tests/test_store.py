"""The SQLite store on real files: transitions, ownership, recovery, migrations."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from sqlite_utils import Database

from durabatch.artifacts import INLINE_BYTES, digest_of
from durabatch.errors import RunOwnedError, StoreError
from durabatch.events import replay
from durabatch.models.base import CallRecord
from durabatch.pricing import PriceBook
from durabatch.reports import export_rows
from durabatch.store import migrated
from durabatch.store.cache import CacheReader
from durabatch.store.records import (
    DocStatus,
    NewDocument,
    Owner,
    RunStatus,
    Step,
    StepFailure,
    StepResult,
    StepStatus,
    Work,
)
from durabatch.store.schema import migrations
from durabatch.store.sqlite import SQLiteStore
from durabatch.verify import verify

TTL = 30.0


def open_store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "s.db")


def new_run(store: SQLiteStore, n: int = 3) -> str:
    run = store.create_run({"cwd": "/"}, ["docs"])
    docs = [NewDocument(f"docs/{i}.txt", f"/docs/{i}.txt", 10) for i in range(n)]
    assert store.add_documents(run.id, docs) == n
    store.finish_discovery(run.id)
    return run.id


def call(model: str = "local", engine: str = "local", cached: int = 0) -> CallRecord:
    return CallRecord(engine, model, input_tokens=100, output_tokens=20, latency_ms=1.0,
                      host="127.0.0.1", cached_tokens=cached)  # fmt: skip


def test_a_document_walks_every_step_and_the_events_rebuild_it(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    run_id = new_run(store, 1)
    owner = store.acquire(run_id, TTL)
    (work,) = store.start_steps(owner, store.pending_documents(run_id, 10))
    assert (work.step, work.attempt) == (Step.EXTRACT, 1)
    digest = store.artifacts.put_text("hello world")
    nxt = store.complete_step(owner, work, StepResult({"chars": 11}, digest, "ab" * 32))
    assert nxt is not None and nxt.step == Step.SUMMARIZE and nxt.text_artifact == digest
    nxt = store.complete_step(owner, nxt, StepResult("hello", calls=(call(),)))
    assert nxt is not None and nxt.step == Step.ENTITIES
    assert store.complete_step(owner, nxt, StepResult([], calls=(call(), call()))) is None
    store.release(run_id, owner, RunStatus.DONE, "finished")
    (doc,) = store.documents(run_id)
    assert (doc.status, doc.step, doc.sha256) == (DocStatus.DONE, None, "ab" * 32)
    assert store.spend(run_id, by="model")[0]["input_tokens"] == 300
    assert verify(store, run_id) == []
    assert replay(store.events(run_id)).documents[doc.id]["status"] == DocStatus.DONE


def test_a_new_database_gets_the_schema_the_migrations_leave(tmp_path: Path) -> None:
    """A new database is made from ``data/schema.sql``, not by replaying every migration:
    the two must give the same tables, indexes and triggers, with the same SQL, and the
    same migrations recorded. (After adding a migration: scripts/snapshot_schema.py.)"""
    made = open_store(tmp_path)
    replayed = sqlite3.connect(":memory:", isolation_level=None)
    migrations.apply(Database(replayed))

    def schema(conn: sqlite3.Connection) -> list[tuple[str, ...]]:
        return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
                            ).fetchall()  # fmt: skip

    def applied(conn: sqlite3.Connection) -> list[tuple[str, ...]]:
        return conn.execute("SELECT migration_set, name FROM _sqlite_migrations ORDER BY id"
                            ).fetchall()  # fmt: skip

    def contents(conn: sqlite3.Connection) -> dict[str, object]:
        """Every table's rows but the migrations' record (its times differ), and the
        file's own settings: what a migration could leave besides its SQL."""
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != '_sqlite_migrations'"
        )]  # fmt: skip
        found: dict[str, object] = {t: conn.execute(f'SELECT * FROM "{t}"').fetchall()
                                    for t in tables}  # fmt: skip
        for pragma in ("user_version", "application_id", "auto_vacuum", "page_size"):
            found[pragma] = conn.execute(f"PRAGMA {pragma}").fetchone()[0]
        return found

    assert [tuple(row) for row in schema(made.conn)] == schema(replayed)
    assert [tuple(row) for row in applied(made.conn)] == applied(replayed)
    made.conn.row_factory = None  # plain tuples, as the replayed connection gives
    assert contents(made.conn) == contents(replayed)
    assert migrations.pending(Database(made.conn)) == []


def test_the_latest_migration_named_for_the_quick_check_is_the_last_one() -> None:
    """Opening a database checks ``migrated.LATEST`` with plain SQL, not the migration
    library: a new migration must be named there too, or databases would skip it."""
    every = [migration.name for migration in migrations.pending(Database(memory=True))]
    assert every[-1] == migrated.LATEST


def test_a_workers_reader_sees_committed_answers_only_and_never_makes_a_database(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path)
    run_id = new_run(store, 1)
    owner = store.acquire(run_id, TTL)
    reader = store.reader()
    (work,) = store.start_steps(owner, store.pending_documents(run_id, 10))
    digest = store.artifacts.put_text("hello world")
    nxt = store.complete_step(owner, work, StepResult({"chars": 11}, digest, "ab" * 32))
    assert nxt is not None
    with store.batch():  # as the engine commits: events and calls go in before COMMIT
        store.complete_step(owner, nxt, StepResult("hello", cache_key="k1", calls=(call(),)))
        assert reader.cached_step("k1", "ab" * 32) is None  # not committed yet
    hit = reader.cached_step("k1", "ab" * 32)
    assert hit is not None and hit.output == "hello" and hit.source.startswith(run_id)
    assert verify(store, run_id) == []
    reader.close()
    moved = tmp_path / "moved.db"
    with pytest.raises(StoreError, match="cannot read earlier answers"):
        CacheReader(moved).cached_step("k1", "ab" * 32)
    assert not moved.exists()


def test_a_step_cannot_complete_twice(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    run_id = new_run(store, 1)
    owner = store.acquire(run_id, TTL)
    (work,) = store.start_steps(owner, store.pending_documents(run_id, 10))
    store.complete_step(owner, work, StepResult({}, None), claim_next=False)
    with pytest.raises(StoreError, match="another process owns this run"):
        store.complete_step(owner, work, StepResult({}, None))
    assert [e.type for e in store.events(run_id)].count("step_completed") == 1


def test_a_second_owner_is_refused_and_named(tmp_path: Path) -> None:
    first, second = open_store(tmp_path), open_store(tmp_path)
    run_id = new_run(first)
    first.acquire(run_id, TTL)
    with pytest.raises(RunOwnedError) as refused:
        second.acquire(run_id, TTL)
    assert f"pid {os.getpid()} on {socket.gethostname()}" in refused.value.message
    assert second.owner_of(run_id) is not None


def test_the_run_of_a_dead_owner_is_taken_over_and_its_work_recovered(tmp_path: Path) -> None:
    dead, heir = open_store(tmp_path), open_store(tmp_path)
    run_id = new_run(dead)
    owner = dead.acquire(run_id, TTL)
    works = dead.start_steps(owner, dead.pending_documents(run_id, 2))
    dead.close()  # the kernel drops the lock, as it does for a kill -9
    heir.acquire(run_id, TTL)
    run = heir.get_run(run_id)
    assert run.interruptions == 1 and run.status == RunStatus.RUNNING
    states = {s.doc_id: s for s in heir.step_states(run_id)}
    for work in works:
        assert states[work.document.id].status == StepStatus.ABANDONED
    assert heir.counts(run_id).pending == 3
    (lost, current) = heir.sessions(run_id)
    assert lost.outcome == "lost" and current.ended_at is None
    again = heir.start_steps(current_owner(heir, run_id), heir.pending_documents(run_id, 1))
    assert again[0].attempt == 2
    assert verify(heir, run_id) == []


def current_owner(store: SQLiteStore, run_id: str) -> Owner:
    owner = store.owner_of(run_id)
    assert owner is not None
    return owner


def test_a_lease_held_by_another_machine_is_respected_until_it_expires(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    run_id = new_run(store)
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute(
            "UPDATE runs SET lease_session = 'x', lease_host = 'elsewhere', lease_pid = 7,"
            " lease_since = 'then', lease_expires = 9e12 WHERE id = ?",
            (run_id,),
        )
    with pytest.raises(RunOwnedError, match="pid 7 on elsewhere"):
        store.acquire(run_id, TTL)
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("UPDATE runs SET lease_expires = 0 WHERE id = ?", (run_id,))
    assert store.owner_of(run_id) is None
    assert store.acquire(run_id, TTL).pid == os.getpid()


def test_a_failed_attempt_is_retried_and_its_history_kept(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    run_id = new_run(store, 1)
    owner = store.acquire(run_id, TTL)
    (work,) = store.start_steps(owner, store.pending_documents(run_id, 1))
    store.fail_step(owner, work, StepFailure("OSError", "disk hiccup", "error", terminal=False))
    (doc,) = store.pending_documents(run_id, 1)
    (work,) = store.start_steps(owner, [doc])
    assert work.attempt == 2
    failure = StepFailure("DocumentError", "bad", "malformed", terminal=True)
    store.fail_step(owner, work, failure)
    (doc,) = store.documents(run_id)
    assert (doc.status, doc.reason, doc.step) == (DocStatus.FAILED, "malformed", Step.EXTRACT)
    history = store.failures(doc.id)
    assert [(f["attempt"], f["reason"]) for f in history] == [(1, "error"), (2, "malformed")]
    assert verify(store, run_id) == []


def test_rediscovery_adds_only_new_documents(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    run = store.create_run({}, [])
    docs = [NewDocument(f"{i}", f"/{i}", 1) for i in range(5)]
    assert store.add_documents(run.id, docs[:3]) == 3
    assert store.add_documents(run.id, docs) == 2
    assert [d.seq for d in store.documents(run.id)] == [1, 2, 3, 4, 5]


def test_migrations_are_named_and_applied_once(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    open_store(tmp_path).close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        names = conn.execute("SELECT name FROM _sqlite_migrations").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()
    assert [n for (n,) in names] == [
        "m001_initial", "m002_call_attempts", "m003_call_kept", "m004_call_prices",
        "m005_reservations", "m006_step_cache", "m007_exact_dollars", "m008_extractions",
        "m009_calls_in_flight", "m010_texts", "m011_deliveries", "m012_status_indexes",
        "m013_call_lookup", "m014_delivery_undo", "m015_delivery_generations",
        "m016_lost_call_bounds", "m017_cheaper_step_record",
    ]  # fmt: skip
    assert mode == ("wal",)


def test_unknown_prices_are_unknown_not_zero(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    run_id = new_run(store, 1)
    owner = store.acquire(run_id, TTL)
    (work,) = store.start_steps(owner, store.pending_documents(run_id, 1))
    result = StepResult({}, calls=(call("mystery-model", "openai"),))
    store.complete_step(owner, work, result, claim_next=False)
    (row,) = store.spend(run_id, by="model")
    assert row["cost_usd"] is None and row["unpriced_calls"] == 1
    (state,) = store.step_states(run_id)
    assert state.unpriced_calls == 1
    (exported,) = export_rows(store, run_id)  # the document's cost, and its step's
    assert exported["cost_usd"] is None and exported["steps"]["extract"]["cost_usd"] is None
    with sqlite3.connect(tmp_path / "s.db") as conn:
        rates = conn.execute("SELECT input_price, output_price, price_source FROM model_calls")
        assert rates.fetchall() == [(None, None, "unknown price")]


def test_each_call_keeps_the_rates_it_was_charged_at(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.prices = PriceBook(provider="gmi")
    run_id = new_run(store, 1)
    owner = store.acquire(run_id, TTL)
    (work,) = store.start_steps(owner, store.pending_documents(run_id, 1))
    result = StepResult({}, calls=(call("openai/gpt-5.4-mini", "openai"),
                                   call("deepseek-ai/DeepSeek-V4-Pro", "openai")))  # fmt: skip
    store.complete_step(owner, work, result, claim_next=False)
    with sqlite3.connect(tmp_path / "s.db") as conn:
        rows = conn.execute(
            "SELECT input_price, output_price, price_source, cost_pico FROM model_calls ORDER BY id"
        ).fetchall()
    assert rows[0] == ("0.40", "2.50", "durabatch table (gmi)", 90_000_000)  # $0.00009
    # GMI publishes only DeepSeek-V4-Pro's input rate: with output tokens the cost is unknown
    assert rows[1] == ("1.39", None, "durabatch table (gmi)", None)


def test_float_dollars_of_an_older_database_become_exact_picodollars(tmp_path: Path) -> None:
    """A database written before m007 kept REAL dollars; the migration rounds each to
    the picodollar, which brings back the exact decimal amount its prices gave."""
    db = Database(tmp_path / "s.db")
    migrations.apply(db, stop_before="m007_exact_dollars")
    db.execute("INSERT INTO runs (id, status, settings, inputs, created_at, updated_at)"
               " VALUES ('r', 'finished', '{}', '[]', 't', 't')")  # fmt: skip
    drift = 0.1 * 3 / 1e6  # 3.0000000000000004e-07 as a float
    for _ in range(3):
        db.execute("INSERT INTO model_calls (run_id, provider, model, input_tokens,"
                   " output_tokens, cost_usd, latency_ms, at) VALUES ('r', 'openai', 'm',"
                   " 1, 1, ?, 1, 't')", [drift])  # fmt: skip
    db.conn.commit()
    db.conn.close()
    store = open_store(tmp_path)
    (row,) = store.spend("r")
    assert row["cost_usd"] == Decimal("0.0000009")  # 3 x $0.0000003, no drift


def test_answers_kept_before_m017_are_still_found_by_their_content(tmp_path: Path) -> None:
    """m017 finds earlier answers through the document's content hash instead of each
    step's own key: answers a database kept before it are found the same way, through
    the new index, and an answer of other content with the same key is not."""
    db = Database(tmp_path / "s.db")
    migrations.apply(db, stop_before="m017_cheaper_step_record")
    db.execute("INSERT INTO runs (id, status, settings, inputs, created_at, updated_at)"
               " VALUES ('r', 'done', '{}', '[]', 't', 't')")  # fmt: skip
    for doc_id, content in ((1, "ab" * 32), (2, "cd" * 32)):
        db.execute("INSERT INTO documents (id, run_id, seq, path, source, size, sha256, status,"
                   " updated_at) VALUES (?, 'r', ?, ?, ?, 1, ?, 'done', 't')",
                   [doc_id, doc_id, f"{doc_id}.txt", f"/{doc_id}.txt", content])  # fmt: skip
        db.execute("INSERT INTO steps (doc_id, step, status, output, cache_key, completed_at)"
                   " VALUES (?, 'summarize', 'done', ?, ?, 't')",
                   [doc_id, f'"summary {doc_id}"', f"k{doc_id}"])  # fmt: skip
    db.conn.commit()
    db.conn.close()
    store = open_store(tmp_path)
    hit = store.cached_step("k1", "ab" * 32)
    assert hit is not None and hit.output == "summary 1" and hit.source == "r:1.txt"
    assert store.cached_step("k1", "cd" * 32) is None  # the key of other content
    assert store.cached_step("k2", "cd" * 32) is not None
    plan = store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT 1 FROM steps s JOIN documents d ON d.id = s.doc_id"
        " WHERE d.sha256 = ? AND s.cache_key = ?", ("ab" * 32, "k1"),
    ).fetchall()  # fmt: skip
    assert any("documents_content" in row[3] for row in plan)
    indexes = {name for (name,) in store.conn.execute("SELECT name FROM sqlite_master")}
    assert not {"steps_cache", "model_calls_run"} & indexes
    store.close()


def test_many_earlier_answers_are_looked_up_in_one_statement(tmp_path: Path) -> None:
    """``cached_steps``: each key's answer made from its own content, an original before a
    copy of it, the earliest first; no answer for a key of other content."""
    store = open_store(tmp_path)
    store.conn.execute("INSERT INTO runs (id, status, settings, inputs, created_at, updated_at)"
                       " VALUES ('r', 'done', '{}', '[]', 't', 't')")  # fmt: skip
    rows = [(1, "ab", "k1", None, "t2"), (2, "ab", "k1", "r:9.txt", "t1"),
            (3, "ab", "k1", None, "t3"), (4, "cd", "k2", None, "t1"),
            (5, "ef", "k3", None, "t1")]  # fmt: skip
    for doc_id, content, key, copied, at in rows:
        store.conn.execute("INSERT INTO documents (id, run_id, seq, path, source, size, sha256,"
                           " status, updated_at) VALUES (?, 'r', ?, ?, ?, 1, ?, 'done', 't')",
                           (doc_id, doc_id, f"{doc_id}.txt", f"/{doc_id}.txt",
                            content * 32))  # fmt: skip
        store.conn.execute("INSERT INTO steps (doc_id, step, status, output, cache_key,"
                           " cached_from, completed_at)"
                           " VALUES (?, 'summarize', 'done', ?, ?, ?, ?)",
                           (doc_id, f'"summary {doc_id}"', key, copied, at))  # fmt: skip
    store.conn.commit()
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    found = store.cached_steps([("k1", "ab" * 32), ("k2", "cd" * 32), ("k3", "cd" * 32),
                                ("k4", "ab" * 32)])  # fmt: skip
    store.conn.set_trace_callback(None)
    assert {key: hit.output for key, hit in found.items()} == {"k1": "summary 1", "k2": "summary 4"}
    assert found["k1"].source == "r:1.txt"
    assert len(seen) == 1
    store.close()


def test_the_same_work_typed_another_way_is_the_same_work(tmp_path: Path) -> None:
    """A trailing slash on the endpoint, or each step's model named instead of one for all,
    asks the same of the same model: the second run over the same files is refused."""
    api = {"cwd": str(tmp_path), "provider": "openai", "base_url": "http://h/v1", "model": "m"}
    first = open_store(tmp_path)
    made = first.create_run(api, ["docs"])
    second = open_store(tmp_path)
    for typed in ({"base_url": "http://h/v1/"},
                  {"model": None, "summarize_model": "m", "entities_model": "m"}):  # fmt: skip
        with pytest.raises(RunOwnedError) as refused:
            second.create_run(api | typed, ["docs"])
        assert refused.value.run_id == made.id
    assert second.create_run(api | {"entities_model": "n"}, ["docs"]).id != made.id
    first.close()


def test_a_run_over_the_same_files_is_refused_while_its_creator_holds_it(tmp_path: Path) -> None:
    """Even before the first run has written its lease, the refusal names its pid."""
    first = open_store(tmp_path)
    made = first.create_run({"cwd": str(tmp_path), "model": "m"}, ["docs"])
    second = open_store(tmp_path)  # another open file: the kernel lock is held elsewhere
    with pytest.raises(RunOwnedError) as refused:
        second.create_run({"cwd": str(tmp_path), "model": "m"}, ["./docs/"])
    assert refused.value.run_id == made.id and refused.value.pid == os.getpid()
    assert "a run over the same files is in progress" in refused.value.message
    other = second.create_run({"cwd": str(tmp_path), "model": "n"}, ["docs"])  # other work
    assert other.id != made.id
    first.close()
    again = second.create_run({"cwd": str(tmp_path), "model": "m"}, ["docs/a.txt"])
    assert again.id not in (made.id, other.id)  # the holder is gone


def held(db: Path, work: Work) -> tuple[object, ...]:
    """What the database says a claimed step's work is, read on a connection of its own:
    its attempt, the extracted text (artifact and the text kept inline), the content
    hash, whether this session already had the document in hand, the document's status,
    and the text of the event that started the step."""
    conn = sqlite3.connect(db)
    try:
        doc_id, step = work.document.id, work.step
        (attempt, session), = conn.execute(
            "SELECT attempts, session_id FROM steps WHERE doc_id = ? AND step = ?", (doc_id, step)
        )  # fmt: skip
        extracted = conn.execute(
            "SELECT artifact FROM steps WHERE doc_id = ? AND step = 'extract'", (doc_id,)
        ).fetchone()
        artifact = extracted[0] if extracted else None
        text = conn.execute("SELECT text FROM texts WHERE digest = ?", (artifact,)).fetchone()
        sha256, status = conn.execute(
            "SELECT sha256, status FROM documents WHERE id = ?", (doc_id,)
        ).fetchone()
        (started,) = conn.execute(
            "SELECT data FROM events WHERE doc_id = ? AND step = ? AND type = 'step_started'"
            " ORDER BY seq DESC LIMIT 1",
            (doc_id, step),
        ).fetchone()
        (before,) = conn.execute(
            "SELECT COUNT(*) FROM steps WHERE doc_id = ? AND step != ? AND session_id = ?",
            (doc_id, step, session),
        ).fetchone()
    finally:
        conn.close()
    recheck = step != Step.EXTRACT and before == 0
    # the event's text as json.dumps wrote it before claims were built: verify reads values,
    # `durabatch events` shows the text
    event = json.dumps({"attempt": attempt, "session": session}, ensure_ascii=False)
    return attempt, artifact, text[0] if text else None, sha256, recheck, status, event == started


def handed(work: Work) -> tuple[object, ...]:
    doc = work.document
    return (work.attempt, work.text_artifact, work.text, doc.sha256, work.recheck, doc.status,
            True)  # fmt: skip


def test_every_claim_hands_out_what_the_database_holds(tmp_path: Path) -> None:
    """A step claimed in the commit that completes the one before is built from what the
    session knows, not read back: it must be what the database holds, whatever the text
    came from (kept inline, a file of its own, reused from an earlier extraction) and
    however the step was claimed (first, again after a failure, by a later session)."""
    store = open_store(tmp_path)
    run_id = new_run(store, 5)
    owner = store.acquire(run_id, TTL)

    def claimed(work: Work | None) -> Work:
        assert work is not None
        assert handed(work) == held(store.path, work)  # as the claim committed
        return work

    claims = [claimed(w) for w in store.start_steps(owner, store.pending_documents(run_id, 10))]
    small, large = "a short text", "x" * (INLINE_BYTES + 1)
    results = [
        StepResult({"chars": 12}, digest_of(small), "aa" * 32, text=small),  # kept inline
        StepResult({"chars": len(large)}, store.artifacts.put_text(large), "bb" * 32),  # a file
        StepResult({"chars": 12}, digest_of(small), "cc" * 32, cached_from="r:docs/0.txt"),
        StepResult({"chars": 12}, digest_of(small), None, text=small),  # no hash
    ]
    summaries, entities = [], []
    for work, result in zip(claims[:4], results, strict=True):
        summaries.append(claimed(store.complete_step(owner, work, result)))
        entities.append(claimed(store.complete_step(owner, summaries[-1], StepResult("s"))))
    assert [w.step for w in summaries + entities] == [Step.SUMMARIZE] * 4 + [Step.ENTITIES] * 4
    assert [(w.text_artifact, w.text) for w in entities] == [
        (digest_of(small), small), (results[1].artifact, None), (digest_of(small), small),
        (digest_of(small), small),
    ]  # fmt: skip
    # the fifth fails its extraction once, and is claimed again; then its summary once
    store.fail_step(owner, claims[4], StepFailure("OSError", "hiccup", "error", terminal=False))
    (again,) = map(claimed, store.start_steps(owner, store.pending_documents(run_id, 10)))
    summary = claimed(store.complete_step(owner, again, results[0]))
    store.fail_step(owner, summary, StepFailure("OSError", "hiccup", "error", terminal=False))
    (retried,) = map(claimed, store.start_steps(owner, store.pending_documents(run_id, 10)))
    assert (again.attempt, summary.attempt, retried.attempt) == (2, 1, 2)
    # a later session takes the rest over: its first step of each document checks the file
    store.abandon(owner, [*entities, retried], "stopped")
    store.release(run_id, owner, RunStatus.INTERRUPTED, "interrupted")
    later = store.acquire(run_id, TTL)
    resumed = [claimed(w) for w in store.start_steps(later, store.pending_documents(run_id, 10))]
    last = claimed(store.complete_step(later, resumed[4], StepResult("s")))
    assert [w.recheck for w in resumed] == [True] * 5 and not last.recheck
    assert [w.attempt for w in [*resumed, last]] == [2, 2, 2, 2, 3, 1]
    assert verify(store, run_id) == []
