"""Rebuild a run's state from its events alone.

Each event type is one small function that changes a plain-dict state, the
same change its transaction made to the tables. ``durabatch verify`` replays
the events and compares the result with the tables, field by field.

``durabatch compact`` folds a run's events into one ``snapshot`` event that
carries the state they establish (``snapshot_data``); replaying it restores
that state exactly, anomalies included, so compaction never changes what
``verify`` says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from durabatch import money
from durabatch.store.records import (
    UNDOABLE,
    DeliveryStatus,
    DocStatus,
    Event,
    RunStatus,
    Step,
    StepStatus,
    delivers,
)


@dataclass
class State:
    run: dict[str, Any] = field(default_factory=dict)
    documents: dict[int, dict[str, Any]] = field(default_factory=dict)
    steps: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    partials: dict[tuple[int, str, int], Any] = field(default_factory=dict)
    deliveries: dict[int, dict[str, Any]] = field(default_factory=dict)
    # what the history itself says went wrong, e.g. a finished step that ran again
    anomalies: list[str] = field(default_factory=list)


def replay(events: Iterable[Event]) -> State:
    state = State()
    for event in events:
        handler = _HANDLERS.get(event.type)
        if handler is None:
            raise ValueError(f"event {event.seq} has unknown type {event.type!r}")
        handler(state, event)
    return state


DOLLARS = ("cost_usd", "saved_usd")


def snapshot_data(state: State, folded: int) -> dict[str, Any]:
    """The state as JSON: what a ``snapshot`` event carries in place of ``folded`` events."""

    def step(fields: dict[str, Any]) -> dict[str, Any]:
        return {k: money.text(v) if k in DOLLARS else v for k, v in fields.items()}

    return {
        "folded": folded,
        "run": state.run,
        "documents": [[doc_id, doc] for doc_id, doc in state.documents.items()],
        "steps": [[doc_id, name, step(f)] for (doc_id, name), f in state.steps.items()],
        "partials": [[*key, output] for key, output in state.partials.items()],
        "deliveries": [[delivery_id, d] for delivery_id, d in state.deliveries.items()],
        "anomalies": state.anomalies,
    }


def _snapshot(state: State, event: Event) -> None:
    data = event.data
    state.run = {"cancel_requested": False, **data["run"]}
    state.documents = {doc_id: dict(doc) for doc_id, doc in data["documents"]}
    state.steps = {
        (doc_id, name): {k: money.parse(v) if k in DOLLARS else v for k, v in fields.items()}
        for doc_id, name, fields in data["steps"]
    }
    state.partials = {(doc_id, name, idx): out for doc_id, name, idx, out in data["partials"]}
    state.deliveries = {
        delivery_id: {
            **d,
            "made_dirs": tuple(d.get("made_dirs", ())),
            "generation": d.get("generation", 0),
        }
        for delivery_id, d in data["deliveries"]
    }
    state.anomalies = list(data["anomalies"])


def _run_created(state: State, event: Event) -> None:
    state.run.update(status=RunStatus.RUNNING, interruptions=0, discovered=False,
                     deliver=delivers(event.data["settings"]),
                     cancel_requested=False)  # fmt: skip


def _discovered(state: State, event: Event) -> None:
    assert event.doc_id is not None
    state.documents[event.doc_id] = {
        "path": event.data["path"],
        "status": DocStatus.PENDING,
        "step": Step.EXTRACT,
        "reason": None,
        "error": None,
        "sha256": None,
    }


def _discovery_finished(state: State, event: Event) -> None:
    state.run["discovered"] = True


def _session_started(state: State, event: Event) -> None:
    if not event.data.get("side"):  # a session that only delivers or withdraws keeps it
        state.run["status"] = RunStatus.RUNNING


def _session_lost(state: State, event: Event) -> None:
    state.run["interruptions"] += 1


def _session_ended(state: State, event: Event) -> None:
    state.run["status"] = event.data["status"]
    state.run["interruptions"] += int(event.data["interrupted"])


def _settings_changed(state: State, event: Event) -> None:
    """Settings are not part of the replayed state; the event is the record of it."""


def _step(state: State, event: Event) -> dict[str, Any]:
    assert event.doc_id is not None and event.step is not None
    key = (event.doc_id, event.step)
    if key not in state.steps:
        state.steps[key] = {"status": None, "attempts": 0, "output": None, "artifact": None,
                            "input_tokens": 0, "output_tokens": 0, "cost_usd": None,
                            "unpriced_calls": 0}  # fmt: skip
    return state.steps[key]


def _add_cost(step: dict[str, Any], data: dict[str, Any]) -> None:
    step["input_tokens"] += data["input_tokens"]
    step["output_tokens"] += data["output_tokens"]
    step["cost_usd"] = (step["cost_usd"] or Decimal(0)) + (money.parse(data["cost_usd"]) or 0)
    step["unpriced_calls"] += data["unpriced_calls"]


def _doc(state: State, event: Event) -> dict[str, Any]:
    assert event.doc_id is not None
    return state.documents[event.doc_id]


def _step_started(state: State, event: Event) -> None:
    step = _step(state, event)
    if step["status"] == StepStatus.DONE:
        state.anomalies.append(
            f"event {event.seq}: {event.step} of document #{event.doc_id} started again "
            "after it had completed"
        )
    step.update(status=StepStatus.RUNNING, attempts=event.data["attempt"])
    _doc(state, event).update(status=DocStatus.RUNNING, step=event.step)


def _partial_saved(state: State, event: Event) -> None:
    assert event.doc_id is not None and event.step is not None
    state.partials[(event.doc_id, event.step, event.data["index"])] = event.data["output"]
    _add_cost(_step(state, event), event.data)


def _step_completed(state: State, event: Event) -> None:
    step = _step(state, event)
    if step["status"] != StepStatus.RUNNING:
        state.anomalies.append(
            f"event {event.seq}: {event.step} of document #{event.doc_id} completed while "
            f"{step['status']}, not running"
        )
    _add_cost(step, event.data)
    step.update(
        status=StepStatus.DONE, output=event.data["output"], artifact=event.data["artifact"]
    )
    for name in ("cache_key", "cached_from"):
        step[name] = event.data.get(name)
    step["saved_usd"] = money.parse(event.data.get("saved_usd"))
    doc = _doc(state, event)
    if event.data["sha256"] is not None:
        doc["sha256"] = event.data["sha256"]
    following = Step(str(event.step)).next(deliver=state.run.get("deliver", False))
    if following is not None:
        doc.update(status=DocStatus.PENDING, step=following)


def _step_failed(state: State, event: Event) -> None:
    step = _step(state, event)
    _add_cost(step, event.data)
    step["status"] = StepStatus.FAILED
    if not event.data["terminal"]:
        _doc(state, event)["status"] = DocStatus.PENDING


def _step_abandoned(state: State, event: Event) -> None:
    step = _step(state, event)
    if "cost_usd" in event.data:
        _add_cost(step, event.data)
    step["status"] = StepStatus.ABANDONED
    _doc(state, event)["status"] = DocStatus.PENDING


def _document_changed(state: State, event: Event) -> None:
    """The file changed between sessions: the document starts over from extract."""
    for key in [k for k in state.steps if k[0] == event.doc_id]:
        del state.steps[key]
    for chunk in [k for k in state.partials if k[0] == event.doc_id]:
        del state.partials[chunk]
    _doc(state, event).update(status=DocStatus.PENDING, step=Step.EXTRACT, sha256=None)


def _document_finished(state: State, event: Event) -> None:
    doc = _doc(state, event)
    status = event.data["status"]
    doc.update(status=status, reason=event.data["reason"], error=event.data["error"])
    if status == DocStatus.DONE:
        doc["step"] = None


def _delivery(event: Event, status: DeliveryStatus) -> dict[str, Any]:
    data = event.data
    return {
        "doc_id": event.doc_id, "target": data["target"], "kind": data["kind"],
        "location": data["location"], "sha256": data["sha256"], "key": data["key"],
        "receiver_id": data["receiver_id"], "status": status, "undo": None,
        "compensate_url": data.get("compensate_url"),
        "made_dirs": tuple(data.get("made_dirs", ())), "generation": data.get("generation", 0),
    }  # fmt: skip


def _delivery_started(state: State, event: Event) -> None:
    """A side effect is about to happen: from here on it may have happened."""
    state.deliveries[event.data["delivery"]] = _delivery(event, DeliveryStatus.DELIVERING)


def _delivered(state: State, event: Event) -> None:
    """A side effect happened (or happened again, after it had been withdrawn)."""
    state.deliveries[event.data["delivery"]] = _delivery(event, DeliveryStatus.DELIVERED)


def _delivery_refused(state: State, event: Event) -> None:
    delivery = state.deliveries[event.data["delivery"]]
    delivery.update(status=DeliveryStatus.REFUSED, undo=event.data["why"])


def _delivery_undone(state: State, event: Event) -> None:
    delivery = state.deliveries.get(event.data["delivery"])
    if delivery is None or delivery["status"] not in UNDOABLE:
        state.anomalies.append(f"event {event.seq}: undid a delivery that was not delivered")
        return
    delivery.update(status=event.data["status"], undo=event.data["undo"])


def _cancel_requested(state: State, event: Event) -> None:
    """The run's owner is asked to stop; the run becomes cancelled when a session ends,
    or at once when nobody owned it."""
    state.run["cancel_requested"] = True
    if "status" in event.data:
        state.run["status"] = event.data["status"]


_HANDLERS: dict[str, Callable[[State, Event], None]] = {
    "delivery_started": _delivery_started,
    "delivered": _delivered,
    "delivery_refused": _delivery_refused,
    "delivery_undone": _delivery_undone,
    "cancel_requested": _cancel_requested,
    "snapshot": _snapshot,
    "run_created": _run_created,
    "document_discovered": _discovered,
    "discovery_finished": _discovery_finished,
    "session_started": _session_started,
    "session_lost": _session_lost,
    "session_ended": _session_ended,
    "settings_changed": _settings_changed,
    "step_started": _step_started,
    "partial_saved": _partial_saved,
    "step_completed": _step_completed,
    "step_failed": _step_failed,
    "step_abandoned": _step_abandoned,
    "document_changed": _document_changed,
    "document_finished": _document_finished,
}
