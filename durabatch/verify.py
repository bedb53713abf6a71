"""Prove that a run's tables are what its events say, and that its files are whole."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any

from durabatch import artifacts
from durabatch.errors import DatabaseDamaged
from durabatch.events import State, replay
from durabatch.store import Store
from durabatch.store.records import StepStatus

DOC_FIELDS = ("path", "status", "step", "reason", "error", "sha256")
STEP_FIELDS = ("status", "attempts", "output", "artifact", "input_tokens", "output_tokens",
               "cost_usd", "unpriced_calls", "cache_key", "cached_from", "saved_usd")  # fmt: skip
DELIVERY_FIELDS = ("doc_id", "target", "kind", "location", "sha256", "key", "receiver_id",
                   "status", "undo", "compensate_url", "made_dirs", "generation")  # fmt: skip
MAX_REPORTED = 50


def verify(store: Store, run_id: str) -> list[str]:
    """Every difference found, as sentences; an empty list means the run checks out.

    Events and tables are read in one snapshot, so a run in progress verifies too. A
    damaged file is a finding too: what the integrity check lists, or, when the damage
    stops even that, that the file is damaged and what to do about it."""
    problems: list[str] = []
    try:
        with store.snapshot():
            store.get_run(run_id)  # an unknown run is a usage error before the long checks
            problems += [f"database: {p}" for p in store.integrity_check()]
            rebuilt = replay(store.events(run_id))
            problems += rebuilt.anomalies
            problems += _compare_run(store, run_id, rebuilt)
            problems += _compare_documents(store, run_id, rebuilt)
            problems += _compare_steps(store, run_id, rebuilt)
            problems += _compare_partials(store, run_id, rebuilt)
            problems += _compare_deliveries(store, run_id, rebuilt)
    except DatabaseDamaged as exc:
        problems.append(f"database: {exc.message}")
    return problems


def _differ(what: str, table: dict[str, Any], events: dict[str, Any],
            names: tuple[str, ...]) -> list[str]:  # fmt: skip
    return [
        f"{what}: {name} is {table.get(name)!r} in the tables but {events.get(name)!r} "
        "in the events"
        for name in names
        if table.get(name) != events.get(name)
    ]


def _compare_run(store: Store, run_id: str, rebuilt: State) -> list[str]:
    run = store.get_run(run_id)
    table = {"status": run.status, "interruptions": run.interruptions,
             "discovered": run.discovered,
             "cancel_requested": run.cancel_requested}  # fmt: skip
    return _differ(f"run {run_id}", table, rebuilt.run, tuple(table))


def _compare_documents(store: Store, run_id: str, rebuilt: State) -> list[str]:
    rows = (
        (doc.id, f"document {doc.path}", {name: getattr(doc, name) for name in DOC_FIELDS})
        for doc in store.documents(run_id)
    )
    return _compare(rows, rebuilt.documents, "document")


def _compare_steps(store: Store, run_id: str, rebuilt: State) -> list[str]:
    damaged: list[str] = []

    def rows() -> Iterator[tuple[Hashable, str, dict[str, Any]]]:
        for step in store.step_states(run_id):
            kept = step.artifact is not None and step.status == StepStatus.DONE
            if kept and not _intact(store, str(step.artifact)):
                damaged.append(f"artifact {step.artifact}: missing or damaged")
            label = f"step {step.step} of document #{step.doc_id}"
            yield (step.doc_id, str(step.step)), label, {n: getattr(step, n) for n in STEP_FIELDS}

    return _compare(rows(), rebuilt.steps, "step") + damaged


def _intact(store: Store, digest: str) -> bool:
    """The step's extracted text is still there, in the database or in its file, and
    still hashes to its name."""
    text = store.inline_text(digest)
    if text is None:
        return store.artifacts.check(digest)
    return artifacts.digest_of(text) == digest


def _compare(rows: Iterable[tuple[Hashable, str, dict[str, Any]]],
             rebuilt: Mapping[Any, dict[str, Any]], what: str) -> list[str]:  # fmt: skip
    """Row by row against the rebuilt state; rows missing on either side count too."""
    problems: list[str] = []
    seen = set()
    for key, label, table in rows:
        seen.add(key)
        events = rebuilt.get(key)
        if events is None:
            problems.append(f"{label}: in the tables but not in the events")
        else:
            problems += _differ(label, table, events, tuple(table))
        if len(problems) > MAX_REPORTED:
            return problems
    missing = rebuilt.keys() - seen
    return problems + [
        f"{what} {key}: in the events but missing from the tables" for key in missing
    ]


def _compare_partials(store: Store, run_id: str, rebuilt: State) -> list[str]:
    table = {(doc_id, step, idx): output for doc_id, step, idx, output in store.partials(run_id)}
    if table == rebuilt.partials:
        return []
    keys = sorted(
        set(table) ^ set(rebuilt.partials)
        | {k for k in table.keys() & rebuilt.partials.keys() if table[k] != rebuilt.partials[k]}
    )
    return [f"partial result {key}: tables and events differ" for key in keys[:MAX_REPORTED]]


def _compare_deliveries(store: Store, run_id: str, rebuilt: State) -> list[str]:
    rows = (
        (d.id, f"delivery {d.id} ({d.location})", {n: getattr(d, n) for n in DELIVERY_FIELDS})
        for d in store.deliveries(run_id)
    )
    return _compare(rows, rebuilt.deliveries, "delivery")
