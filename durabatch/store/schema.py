"""Named, append-only schema migrations. Never edit a shipped one: add the next."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from durabatch.store.migrated import SET

migrations = Migrations(SET)


@migrations(name="m001_initial")
def m001_initial(db: Database) -> None:
    # one statement at a time: executescript() would COMMIT the migration's
    # transaction halfway, before the migration is recorded as applied
    for statement in _split(
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            settings TEXT NOT NULL,
            inputs TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            interruptions INTEGER NOT NULL DEFAULT 0,
            discovered INTEGER NOT NULL DEFAULT 0,
            lease_session TEXT,
            lease_host TEXT,
            lease_pid INTEGER,
            lease_since TEXT,
            lease_expires REAL
        );
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            outcome TEXT
        );
        CREATE INDEX sessions_run ON sessions(run_id, started_at);
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            seq INTEGER NOT NULL,
            path TEXT NOT NULL,
            source TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT,
            status TEXT NOT NULL,
            step TEXT,
            reason TEXT,
            error TEXT,
            updated_at TEXT NOT NULL,
            UNIQUE (run_id, source)
        );
        -- work is found by index, never by scanning: pending documents in order
        CREATE INDEX documents_work ON documents(run_id, status, seq);
        CREATE INDEX documents_seq ON documents(run_id, seq);
        CREATE TABLE steps (
            doc_id INTEGER NOT NULL REFERENCES documents(id),
            step TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            output TEXT,
            artifact TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL,
            unpriced_calls INTEGER NOT NULL DEFAULT 0,
            session_id TEXT,
            started_at TEXT,
            completed_at TEXT,
            PRIMARY KEY (doc_id, step)
        );
        CREATE TABLE partials (
            doc_id INTEGER NOT NULL REFERENCES documents(id),
            step TEXT NOT NULL,
            idx INTEGER NOT NULL,
            output TEXT NOT NULL,
            PRIMARY KEY (doc_id, step, idx)
        );
        CREATE TABLE failures (
            id INTEGER PRIMARY KEY,
            doc_id INTEGER NOT NULL REFERENCES documents(id),
            step TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            error_class TEXT NOT NULL,
            reason TEXT NOT NULL,
            message TEXT NOT NULL,
            at TEXT NOT NULL
        );
        CREATE INDEX failures_doc ON failures(doc_id, step);
        CREATE TABLE model_calls (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            doc_id INTEGER REFERENCES documents(id),
            step TEXT,
            attempt INTEGER,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cost_usd REAL,
            latency_ms REAL NOT NULL,
            http_status INTEGER,
            error TEXT,
            at TEXT NOT NULL
        );
        CREATE INDEX model_calls_run ON model_calls(run_id, model);
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            at TEXT NOT NULL,
            type TEXT NOT NULL,
            doc_id INTEGER,
            step TEXT,
            data TEXT NOT NULL
        );
        CREATE INDEX events_run ON events(run_id, seq);
        -- the event history is append-only: the database itself refuses edits
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
        """
    ):
        db.execute(statement)


def _split(script: str) -> list[str]:
    """Split on semicolons that end a line, keeping trigger bodies whole."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        in_trigger = "CREATE TRIGGER" in current[0]
        if line.rstrip().endswith("END;" if in_trigger else ";"):
            statements.append("\n".join(current).strip())
            current = []
    return [s for s in statements if s]


@migrations(name="m002_call_attempts")
def m002_call_attempts(db: Database) -> None:
    """Each model call row says where it went, which retry it was, and how it failed."""
    for statement in (
        "ALTER TABLE model_calls ADD COLUMN host TEXT",
        "ALTER TABLE model_calls ADD COLUMN retry INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE model_calls ADD COLUMN error_class TEXT",
    ):
        db.execute(statement)


@migrations(name="m003_call_kept")
def m003_call_kept(db: Database) -> None:
    """Whether a call's answer was committed (as a step result or a chunk's partial):
    the calls that were not are what failures, retries and crashes wasted."""
    db.execute("ALTER TABLE model_calls ADD COLUMN kept INTEGER NOT NULL DEFAULT 0")


@migrations(name="m004_call_prices")
def m004_call_prices(db: Database) -> None:
    """Each call keeps the rates it was charged at (exact decimal text) and their source."""
    for statement in (
        "ALTER TABLE model_calls ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE model_calls ADD COLUMN input_price TEXT",
        "ALTER TABLE model_calls ADD COLUMN output_price TEXT",
        "ALTER TABLE model_calls ADD COLUMN cached_price TEXT",
        "ALTER TABLE model_calls ADD COLUMN price_source TEXT",
    ):
        db.execute(statement)


@migrations(name="m005_reservations")
def m005_reservations(db: Database) -> None:
    """The worst case of each paid call in flight, held against --max-cost until the
    call's real cost is recorded; a dead owner's are dropped when the run is taken over."""
    db.execute(
        "CREATE TABLE reservations (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL"
        " REFERENCES runs(id), doc_id INTEGER NOT NULL, step TEXT NOT NULL,"
        " amount_usd REAL NOT NULL, at TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX reservations_run ON reservations(run_id)")


@migrations(name="m006_step_cache")
def m006_step_cache(db: Database) -> None:
    """A model step's inputs, hashed, so a later run over the same content, model and
    prompt reuses its answer instead of paying again; where the answer came from."""
    for statement in (
        "ALTER TABLE steps ADD COLUMN cache_key TEXT",
        "ALTER TABLE steps ADD COLUMN cached_from TEXT",
        "ALTER TABLE steps ADD COLUMN saved_usd REAL",
        "CREATE INDEX steps_cache ON steps(cache_key) WHERE cache_key IS NOT NULL",
    ):
        db.execute(statement)


@migrations(name="m007_exact_dollars")
def m007_exact_dollars(db: Database) -> None:
    """Dollars as whole picodollars (10^-12 USD), so a run's total is exactly the sum
    of its calls; the REAL columns they replace are converted, then dropped."""
    for table, old, new in (
        ("model_calls", "cost_usd", "cost_pico"),
        ("steps", "cost_usd", "cost_pico"),
        ("steps", "saved_usd", "saved_pico"),
        ("reservations", "amount_usd", "amount_pico"),
    ):
        db.execute(f"ALTER TABLE {table} ADD COLUMN {new} INTEGER")
        db.execute(f"UPDATE {table} SET {new} = CAST(ROUND({old} * 1e12) AS INTEGER)")
        db.execute(f"ALTER TABLE {table} DROP COLUMN {old}")


@migrations(name="m008_extractions")
def m008_extractions(db: Database) -> None:
    """Text that `durabatch estimate` extracted, by content, so a later run over the
    same files reuses it instead of parsing them again."""
    db.execute(
        "CREATE TABLE extractions (key TEXT PRIMARY KEY, sha256 TEXT NOT NULL,"
        " path TEXT NOT NULL, output TEXT NOT NULL, artifact TEXT NOT NULL, at TEXT NOT NULL)"
    )


@migrations(name="m009_calls_in_flight")
def m009_calls_in_flight(db: Database) -> None:
    """Every paid call is written down before it is made (with or without a budget), so
    a call cut off by a crash is still counted: which model, where, and about how many
    input tokens it carried."""
    for statement in (
        "ALTER TABLE reservations ADD COLUMN provider TEXT",
        "ALTER TABLE reservations ADD COLUMN host TEXT",
        "ALTER TABLE reservations ADD COLUMN model TEXT",
        "ALTER TABLE reservations ADD COLUMN input_tokens INTEGER",
        "CREATE INDEX reservations_step ON reservations(doc_id, step)",
    ):
        db.execute(statement)


@migrations(name="m010_texts")
def m010_texts(db: Database) -> None:
    """Extracted text small enough to keep in the database, committed in the same
    transaction as its extract step: no separate file, no extra fsyncs."""
    db.execute("CREATE TABLE texts (digest TEXT PRIMARY KEY, text TEXT NOT NULL)")


@migrations(name="m011_deliveries")
def m011_deliveries(db: Database) -> None:
    """Every side effect a run had (a file written, a webhook called) with what is needed
    to undo it, and how its undo went; a cancel asked of a live run, through the database."""
    for statement in (
        "CREATE TABLE deliveries (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL"
        " REFERENCES runs(id), doc_id INTEGER NOT NULL REFERENCES documents(id),"
        " target TEXT NOT NULL, kind TEXT NOT NULL, location TEXT NOT NULL,"
        " sha256 TEXT NOT NULL, idempotency_key TEXT NOT NULL, receiver_id TEXT,"
        " http_status INTEGER, delivered_at TEXT NOT NULL, status TEXT NOT NULL,"
        " undo TEXT, undone_at TEXT, UNIQUE (run_id, doc_id, target))",
        "CREATE INDEX deliveries_run ON deliveries(run_id, status, id)",
        "ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
    ):
        db.execute(statement)


@migrations(name="m012_status_indexes")
def m012_status_indexes(db: Database) -> None:
    """`status` of a run of 100,000 documents reads indexes, not rows: step states are
    counted from an index (not from rows that carry outputs), spend is summed from an
    index holding every column it adds up, and failures are found by a partial index
    of the documents that have a reason. (Checked with EXPLAIN QUERY PLAN.)"""
    for statement in (
        "CREATE INDEX steps_state ON steps(doc_id, step, status)",
        "CREATE INDEX model_calls_spend ON model_calls(run_id, provider, model, kept,"
        " input_tokens, output_tokens, cost_pico, error)",
        "CREATE INDEX documents_reason ON documents(run_id, seq) WHERE reason IS NOT NULL",
    ):
        db.execute(statement)


@migrations(name="m013_call_lookup")
def m013_call_lookup(db: Database) -> None:
    """A step answered from the cache reports what the original answer cost: its calls
    are found by step, not by reading every call of the database."""
    db.execute("CREATE INDEX model_calls_step ON model_calls(doc_id, step)")


@migrations(name="m014_delivery_undo")
def m014_delivery_undo(db: Database) -> None:
    """What each delivery needs to be undone by itself: the webhook's DELETE URL template
    it was made with (a re-delivery elsewhere has its own), and the folders it created
    (JSON list), removed again when they are empty."""
    for statement in (
        "ALTER TABLE deliveries ADD COLUMN compensate_url TEXT",
        "ALTER TABLE deliveries ADD COLUMN made_dirs TEXT NOT NULL DEFAULT '[]'",
    ):
        db.execute(statement)


@migrations(name="m015_delivery_generations")
def m015_delivery_generations(db: Database) -> None:
    """A row per delivery made, not per target: a document whose file changed after a
    delivery cut off before its checkpoint is delivered again under a new key, and the
    earlier one stays on record to be undone. ``generation``: how many times this content
    was withdrawn from this target before, part of both keys, so delivering it again
    after a withdrawal is a new delivery to the receiver, and so is its undo."""
    for statement in (
        "CREATE TABLE deliveries_new (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL"
        " REFERENCES runs(id), doc_id INTEGER NOT NULL REFERENCES documents(id),"
        " target TEXT NOT NULL, kind TEXT NOT NULL, location TEXT NOT NULL,"
        " sha256 TEXT NOT NULL, idempotency_key TEXT NOT NULL, receiver_id TEXT,"
        " http_status INTEGER, delivered_at TEXT NOT NULL, status TEXT NOT NULL,"
        " undo TEXT, undone_at TEXT, compensate_url TEXT,"
        " made_dirs TEXT NOT NULL DEFAULT '[]', generation INTEGER NOT NULL DEFAULT 0,"
        " UNIQUE (run_id, doc_id, target, idempotency_key))",
        "INSERT INTO deliveries_new (id, run_id, doc_id, target, kind, location, sha256,"
        " idempotency_key, receiver_id, http_status, delivered_at, status, undo, undone_at,"
        " compensate_url, made_dirs) SELECT id, run_id, doc_id, target, kind, location,"
        " sha256, idempotency_key, receiver_id, http_status, delivered_at, status, undo,"
        " undone_at, compensate_url, made_dirs FROM deliveries",
        "DROP TABLE deliveries",
        "ALTER TABLE deliveries_new RENAME TO deliveries",
        "CREATE INDEX deliveries_run ON deliveries(run_id, status, id)",
        "CREATE INDEX deliveries_doc ON deliveries(doc_id, target)",
    ):
        db.execute(statement)


@migrations(name="m016_lost_call_bounds")
def m016_lost_call_bounds(db: Database) -> None:
    """What bounds each call in flight: its prompt at one token per byte, and the
    ``max_tokens`` it asked for (NULL without a budget: no cap was sent). A call whose
    answer never comes back is recorded at that worst case, which is what was held."""
    for statement in (
        "ALTER TABLE reservations ADD COLUMN most_input_tokens INTEGER",
        "ALTER TABLE reservations ADD COLUMN max_tokens INTEGER",
    ):
        db.execute(statement)


@migrations(name="m017_cheaper_step_record")
def m017_cheaper_step_record(db: Database) -> None:
    """Fewer pages for each step's commit to write (26.1 to 19.6 at concurrency 4; see the
    README's Performance section). Earlier answers are found through their document's
    content hash, one index entry a document, instead of through each step's cache key,
    a random 64-character key a step, each landing on a page of its own. ``model_calls_run``
    goes: ``model_calls_spend`` begins with the same run column and serves its reads. And
    ``model_calls_spend`` holds the same columns in another order: the call's id before
    its token counts, so a new call's entry goes after the last one of its model instead
    of at a place its token count picks (a page of its own again)."""
    for statement in (
        "CREATE INDEX documents_content ON documents(sha256) WHERE sha256 IS NOT NULL",
        "DROP INDEX steps_cache",
        "DROP INDEX model_calls_run",
        "DROP INDEX model_calls_spend",
        "CREATE INDEX model_calls_spend ON model_calls(run_id, provider, model, kept, id,"
        " input_tokens, output_tokens, cost_pico, error)",
    ):
        db.execute(statement)
