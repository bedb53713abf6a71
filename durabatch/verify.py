"""Prove that a run's tables are what its events say, and that its files are whole."""

from __future__ import annotations

from typing import Any

from durabatch.events import State, replay
from durabatch.store import Store
from durabatch.store.records import StepStatus

DOC_FIELDS = ("path", "status", "step", "reason", "error", "sha256")
STEP_FIELDS = ("status", "attempts", "output", "artifact", "input_tokens", "output_tokens",
               "cost_usd", "unpriced_calls")  # fmt: skip
MAX_REPORTED = 50


def verify(store: Store, run_id: str) -> list[str]:
    """Every difference found, as sentences; an empty list means the run checks out.

    Events and tables are read in one snapshot, so a run in progress verifies too."""
    problems = [f"database: {p}" for p in store.integrity_check()]
    with store.snapshot():
        rebuilt = replay(store.events(run_id))
        problems += rebuilt.anomalies
        problems += _compare_run(store, run_id, rebuilt)
        problems += _compare_documents(store, run_id, rebuilt)
        problems += _compare_steps(store, run_id, rebuilt)
        problems += _compare_partials(store, run_id, rebuilt)
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
             "discovered": run.discovered}  # fmt: skip
    return _differ(f"run {run_id}", table, rebuilt.run, tuple(table))


def _compare_documents(store: Store, run_id: str, rebuilt: State) -> list[str]:
    problems: list[str] = []
    seen = set()
    for doc in store.documents(run_id):
        seen.add(doc.id)
        events = rebuilt.documents.get(doc.id)
        if events is None:
            problems.append(f"document {doc.path}: in the tables but never discovered in events")
            continue
        table = {name: getattr(doc, name) for name in DOC_FIELDS}
        problems += _differ(f"document {doc.path}", table, events, DOC_FIELDS)
        if len(problems) > MAX_REPORTED:
            return problems
    for doc_id in rebuilt.documents.keys() - seen:
        problems.append(f"document #{doc_id}: in the events but missing from the tables")
    return problems


def _compare_steps(store: Store, run_id: str, rebuilt: State) -> list[str]:
    problems: list[str] = []
    seen = set()
    for step in store.step_states(run_id):
        key = (step.doc_id, str(step.step))
        seen.add(key)
        events = rebuilt.steps.get(key)
        if events is None:
            problems.append(f"step {key}: in the tables but not in the events")
            continue
        table = {name: getattr(step, name) for name in STEP_FIELDS}
        problems += _differ(f"step {step.step} of document #{step.doc_id}", table, events,
                            STEP_FIELDS)  # fmt: skip
        done = step.artifact and step.status == StepStatus.DONE
        if done and not store.artifacts.check(str(step.artifact)):
            problems.append(f"artifact {step.artifact}: missing or damaged")
        if len(problems) > MAX_REPORTED:
            return problems
    for key in rebuilt.steps.keys() - seen:
        problems.append(f"step {key}: in the events but missing from the tables")
    return problems


def _compare_partials(store: Store, run_id: str, rebuilt: State) -> list[str]:
    table = {(doc_id, step, idx): output for doc_id, step, idx, output in store.partials(run_id)}
    if table == rebuilt.partials:
        return []
    keys = sorted(
        set(table) ^ set(rebuilt.partials)
        | {k for k in table.keys() & rebuilt.partials.keys() if table[k] != rebuilt.partials[k]}
    )
    return [f"partial result {key}: tables and events differ" for key in keys[:MAX_REPORTED]]
