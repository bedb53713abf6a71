"""Undo what a run delivered: the compensating transactions of a cancelled or failed run.

Model calls cannot be undone (their cost is reported as the cost of cancelled
work); deliveries can. They are undone latest first, each one its own
checkpoint, so a compensation stopped half way (kill -9, Ctrl-C, a receiver
that is down) continues with the next undo when the command runs again; an
undo made again after a crash is harmless (the file is gone already, the
receiver answers 404). A delivery that may have happened (``delivering``: the
process stopped between the side effect and its checkpoint) is undone too, and
an undo that failed is tried again by the next compensation.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from durabatch.config import Settings
from durabatch.deliver import Note, make_target, owning
from durabatch.errors import Cancelled, NotFinished, RunCancelled
from durabatch.store import Store
from durabatch.store.records import (
    UNDOABLE,
    Delivery,
    DeliveryStatus,
    Owner,
    Run,
    RunStatus,
)
from durabatch.targets import Target, remove_empty

OWNER_POLL_SECONDS = 0.2


@dataclass
class Undone:
    withdrawn: int = 0
    left: list[str] = field(default_factory=list)  # changed since: not ours to remove
    failed: list[str] = field(default_factory=list)  # the receiver refused the undo


def withdraw_all(store: Store, owner: Owner, run: Run, settings: Settings, why: str,
                 note: Note, stopping: threading.Event | None = None,
                 compensate_url: str | None = None,
                 yield_to_cancel: bool = False) -> Undone:  # fmt: skip
    """Undo every delivery of the run not undone yet, latest first: the delivered, those
    that may have happened (``delivering``) and those whose undo failed before.

    ``compensate_url``: the DELETE URL template for webhook deliveries made without one.
    ``yield_to_cancel``: not the cancel's own compensation; a cancel asked for stops it
    (``durabatch cancel`` waits for it, then withdraws the rest with --compensate)."""
    undone = Undone()
    targets: dict[str, Target] = {}
    try:
        for delivery in store.deliveries(run.id, status=UNDOABLE):
            if stopping is not None and stopping.is_set():
                raise NotFinished(f"compensation of run {run.id} stopped; {_again(run.id)}")
            if yield_to_cancel and store.cancel_requested(run.id):
                raise RunCancelled(
                    f"run {run.id} was cancelled while withdrawing; {_again(run.id)}"
                )
            target = targets.get(delivery.target)
            if target is None:
                target = make_target(settings, delivery.target, Path.cwd(), stopping)
                targets[delivery.target] = target
            try:
                status, text = target.withdraw(delivery, _template(delivery, run, compensate_url))
            except Cancelled as exc:
                raise NotFinished(
                    f"compensation of run {run.id} stopped; {_again(run.id)}"
                ) from exc
            store.record_undo(owner, delivery, status, text, why)
            _count(undone, status, f"{delivery.location}: {text}")
            note(f"{status}: {delivery.location} ({text})")
    finally:
        for target in targets.values():
            target.close()
    # a folder made by one delivery may have held the files of others undone after it,
    # and one made for a delivery refused after (a file name too long) is the run's too;
    # a folder still holding a file (left in place, not withdrawn yet) stays
    folders = [d for x in store.deliveries(run.id) for d in x.made_dirs]
    remove_empty(folders)
    return undone


def _template(delivery: Delivery, run: Run, given: str | None) -> str | None:
    """The DELETE URL template for a delivery without one of its own: the one given now,
    or (a delivery recorded before they were kept per delivery) the run's, for its own
    target only."""
    if given or delivery.kind != "webhook":
        return given
    if delivery.target == run.settings.get("deliver_to"):
        return run.settings.get("compensate_url")
    return None


def _count(undone: Undone, status: DeliveryStatus, text: str) -> None:
    if status == DeliveryStatus.WITHDRAWN:
        undone.withdrawn += 1
    elif status == DeliveryStatus.LEFT:
        undone.left.append(text)
    else:
        undone.failed.append(text)


def _again(run_id: str) -> str:
    return f"`durabatch cancel {run_id} --compensate` continues where it stopped"


def cancel(store: Store, run: Run, settings: Settings, *, compensate: bool, note: Note,
           wait: float) -> Undone | None:  # fmt: skip
    """Stop the run (a live owner is told through the database and drains), mark it
    cancelled and, with ``compensate``, undo its deliveries."""
    if run.status != RunStatus.CANCELLED:
        # with no live owner the run is cancelled at once: a kill -9 from here on cannot
        # leave it `running` for cron's `resume` to finish
        store.request_cancel(run.id, unowned=store.owner_of(run.id) is None)
    _wait_for_owner(store, run.id, wait, note)
    outcome = "withdrawn, run cancelled" if compensate else "none withdrawn, run cancelled"
    with owning(store, run.id, settings, outcome, RunStatus.CANCELLED) as (owner, _):
        if not compensate:
            return None
        return withdraw_all(store, owner, run, settings, "cancelled", note,
                            compensate_url=settings.compensate_url)  # fmt: skip


def _wait_for_owner(store: Store, run_id: str, wait: float, note: Note) -> None:
    owner = store.owner_of(run_id)
    if owner is None:
        return
    note(f"asked pid {owner.pid} on {owner.host} to stop; waiting for it to drain")
    deadline = time.monotonic() + wait
    while store.owner_of(run_id) is not None:
        if time.monotonic() > deadline:
            raise NotFinished(
                f"run {run_id} is still draining after {wait:g}s; it stops at its next "
                f"checkpoint: run `durabatch cancel {run_id}` again in a moment"
            )
        time.sleep(OWNER_POLL_SECONDS)


def owed(store: Store, run: Run) -> bool:
    """A finished run with failures under --on-failure compensate, not fully withdrawn."""
    return (
        run.settings.get("on_failure") == "compensate"
        and store.counts(run.id).failed > 0
        and bool(store.deliveries(run.id, status=UNDOABLE))
    )


def after_failure(store: Store, run: Run, settings: Settings, note: Note,
                  stopping: threading.Event | None = None) -> Undone:  # fmt: skip
    """--on-failure compensate: the run ended with failed documents, so nothing it
    delivered may stay (all or nothing)."""
    note(f"run {run.id} ended with failed documents: withdrawing what it delivered")
    outcome = "withdrawn, run finished with failures"
    with owning(store, run.id, settings, outcome) as (owner, _):
        return withdraw_all(store, owner, run, settings, "on-failure", note, stopping,
                            yield_to_cancel=True)  # fmt: skip
