"""deliver: publish a finished document's result to its target, once.

The same document of the same run always gives the same bytes, and so the same
content hash and ``Idempotency-Key``: a delivery made again after a crash (the
side effect happened, its checkpoint did not) is recognised by the receiver,
and a folder finds its file already whole. What is needed to undo a delivery is
committed (as ``delivering``) before it is sent, through the writer, like a paid
call's reservation; the step's result makes it ``delivered``.

``redeliver`` sends the results of a finished run to another target, with no
model call, one checkpoint per document, skipping what already went there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from durabatch.config import Settings
from durabatch.errors import DeliveryHalt, DocumentError, RunCancelled, TargetHalt, UsageError
from durabatch.models.retry import RetryPolicy
from durabatch.steps.context import StepContext
from durabatch.store import Store
from durabatch.store.records import (
    SIDE_SESSION,
    UNDOABLE,
    Delivered,
    Delivery,
    DeliveryStatus,
    DocStatus,
    Document,
    Owner,
    Run,
    RunStatus,
    Step,
    StepResult,
    Work,
)
from durabatch.targets import Target, open_target

Note = Callable[[str], None]  # plain text: the printer shows it as one safe line


def payload(run_id: str, doc: Document, results: dict[str, Any]) -> bytes:
    """What is delivered for a document: deterministic, so a repeat is byte-identical."""
    body = {"run_id": run_id, "path": doc.path, "sha256": doc.sha256,
            "summary": results.get(Step.SUMMARIZE),
            "entities": results.get(Step.ENTITIES, [])}  # fmt: skip
    return (json.dumps(body, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


def idempotency_key(run_id: str, path: str, body: bytes, generation: int = 0) -> str:
    """From run, document, content and generation: the same delivery always gets the same
    key; delivering it again after it was withdrawn is a new one (generation 0 hashes as
    keys did before there were generations)."""
    content = hashlib.sha256(body).hexdigest()
    parts: list[Any] = [run_id, path, content] + ([generation] if generation else [])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def planned_for(target: Target, run_id: str, doc: Document, body: bytes,
                earlier: Sequence[Delivery]) -> tuple[Delivered, frozenset[str]]:  # fmt: skip
    """The delivery of ``body`` to ``target``, in the generation after its withdrawals
    there; and the hashes of this document's earlier deliveries there that may still be
    in place (a file holding one of them is ours to replace)."""
    digest = hashlib.sha256(body).hexdigest()
    here = [d for d in earlier if d.target == target.spec]
    generation = sum(1 for d in here if d.sha256 == digest
                     and d.status == DeliveryStatus.WITHDRAWN)  # fmt: skip
    key = idempotency_key(run_id, doc.path, body, generation)
    planned = replace(target.plan(doc.path, body, key), generation=generation)
    ours = frozenset(d.sha256 for d in here if d.status in UNDOABLE and d.sha256 != digest)
    return planned, ours


def run(work: Work, ctx: StepContext) -> StepResult:
    """The deliver step of a run given --deliver-to; no model call."""
    assert ctx.target is not None, "deliver needs the run's target"
    assert ctx.intend is not None, "deliver writes its intent down through the writer"
    doc = work.document
    body = payload(doc.run_id, doc, work.results)
    planned, ours = planned_for(ctx.target, doc.run_id, doc, body, work.earlier)
    ctx.intend(planned)  # committed as `delivering` before anything is sent or written
    done = ctx.target.publish(planned, body, ours)
    output = {"target": done.target, "location": done.location, "sha256": done.sha256,
              "key": done.key, "receiver_id": done.receiver_id}  # fmt: skip
    return StepResult(output=output, delivery=done)


def make_target(settings: Settings, spec: str, cwd: Path,
                stopping: threading.Event | None = None) -> Target:  # fmt: skip
    """A target under the model calls' retry policy; a drain cuts its waits short."""
    stop = stopping or threading.Event()

    def pause(seconds: float) -> None:
        stop.wait(seconds)

    policy = RetryPolicy(max_attempts=settings.retry_attempts,
                         max_total_seconds=settings.retry_seconds, sleep=pause,
                         cancelled=stop.is_set)  # fmt: skip
    timeouts = (settings.connect_timeout, settings.read_timeout)
    return open_target(spec, cwd, policy, timeouts, settings.compensate_url)


@contextlib.contextmanager
def owning(store: Store, run_id: str, settings: Settings, outcome: str,
           status: RunStatus | None = None) -> Iterator[tuple[Owner, Run]]:  # fmt: skip
    """Own the run for work outside the engine (a re-delivery, a compensation), with the
    run as found under the lock; release it as ``status`` (a cancel), else as it was
    found, or ``cancelled`` if a cancel was asked for meanwhile, however the work ends.
    A live owner refuses (exit 75)."""
    owner = store.acquire(run_id, settings.lease_ttl, side=True)
    found: Run | None = None
    try:
        found = store.get_run(run_id)
        with store.kept_alive(run_id, owner, settings.lease_ttl):
            yield owner, found
    finally:
        final = status or (
            RunStatus.CANCELLED if found is None or store.cancel_requested(run_id) else found.status
        )
        store.release(run_id, owner, final, SIDE_SESSION + outcome)


@dataclass
class Tally:
    delivered: int = 0
    already: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)


def redeliver(store: Store, run: Run, settings: Settings, spec: str, note: Note) -> Tally:
    """Deliver every done document of a finished run to ``spec``; no model is called."""
    _finished(run)
    tally = Tally()
    target = make_target(settings, spec, Path.cwd())
    try:
        with owning(store, run.id, settings, "re-delivered") as (owner, found):
            _finished(found)  # again under the lock: a cancel may have come in between
            _each(store, run, owner, target, tally, note)
    finally:
        target.close()
    return tally


def _finished(run: Run) -> None:
    if run.cancel_requested or run.status == RunStatus.CANCELLED:
        raise UsageError(f"run {run.id} was cancelled: a cancelled run is not delivered again")
    if run.status != RunStatus.DONE:
        raise UsageError(
            f"run {run.id} is {run.status}, not finished: `durabatch resume {run.id}` first"
        )


def _each(store: Store, run: Run, owner: Owner, target: Target, tally: Tally,
          note: Note) -> None:  # fmt: skip
    there = {d.doc_id for d in store.deliveries(run.id) if d.target == target.spec
             and d.status == "delivered"}  # fmt: skip
    finished = [doc for doc in store.documents(run.id) if doc.status == DocStatus.DONE]
    for doc in finished:
        if store.cancel_requested(run.id):  # `durabatch cancel` waits for us: stop here
            raise RunCancelled(
                f"run {run.id} was cancelled: the re-delivery stopped after {tally.delivered} "
                f"new deliveries; `durabatch cancel {run.id} --compensate` withdraws them"
            )
        if doc.id in there:
            tally.already += 1
            continue
        body = payload(run.id, doc, store.results(doc.id))
        try:
            planned, ours = planned_for(target, run.id, doc, body, store.deliveries_of(doc.id))
            store.intend_delivery(owner, run.id, doc.id, planned)
            done = target.publish(planned, body, ours)
        except TargetHalt as exc:  # the rest would fail too: stop, and say how to go on
            again = f"`durabatch deliver {run.id} --to {shlex.quote(target.spec)}` again"
            halt = type(exc)(exc.problem, again)
            if isinstance(exc, DeliveryHalt):  # nothing taken: refused
                store.refuse_delivery(owner, run.id, doc.id, target.spec, halt.message)
            raise halt from exc
        except DocumentError as exc:
            store.refuse_delivery(owner, run.id, doc.id, target.spec, exc.message)
            tally.failed.append({"path": doc.path, "reason": exc.reason, "error": exc.message})
            note(f"not delivered: {doc.path}: {exc.message}")
            continue
        store.record_delivery(owner, run.id, doc.id, done)
        tally.delivered += 1
