"""What a user reads back: run status, cost summary and exported results, as plain data."""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from durabatch import money
from durabatch.errors import UsageError
from durabatch.store import Store
from durabatch.store.records import SIDE_SESSION as SIDE
from durabatch.store.records import Document, Run, RunStatus, Step, StepState

MAX_FAILURES_LISTED = 100
EXPORT_FIELDS = ("path", "sha256", "status", "reason", "error", "summary", "entities",
                 "cost_usd", "input_tokens", "output_tokens")  # fmt: skip


def cost_summary(store: Store, run_id: str) -> dict[str, Any]:
    """Dollars by model; a total is only given when every call had a known price."""
    by_model = {}
    known = Decimal(0)
    unpriced = 0
    for row in store.spend(run_id, by="model"):
        by_model[row["model"]] = row
        known += row["cost_usd"] or 0
        unpriced += row["unpriced_calls"]
    (wasted,) = store.spend(run_id, kept=False)
    return {
        "total_usd": None if unpriced else known,
        "known_usd": known,
        "unpriced_calls": unpriced,
        "wasted_usd": _dollars(wasted)["cost_usd"],
        "by_model": by_model,
    }


TOP_DOCUMENTS = 10


def _dollars(row: dict[str, Any]) -> dict[str, Any]:
    """A spend row whose dollars are unknown (None) when any of its calls had no price."""
    calls = row.get("calls") or 0
    known = row.get("cost_usd") or Decimal(0)
    return {
        **{k: (v if v is not None else 0) for k, v in row.items()},
        "calls": calls,
        "cost_usd": None if row.get("unpriced_calls") else known,
        "known_usd": known,
    }


def cost_report(store: Store, run: Run) -> dict[str, Any]:
    """What a run cost, by model, step and document; what was wasted; what resuming saved.

    Every figure is a sum over rows of ``model_calls``: "useful" are the calls whose
    answer was committed, "wasted" the rest (failed attempts, retries, calls whose
    step was abandoned by a crash or a drain and made again)."""
    # sessions that only delivered or withdrew results made no model call
    sessions = [s for s in store.sessions(run.id) if not (s.outcome or "").startswith(SIDE)]
    last_start = sessions[-1].started_at if len(sessions) > 1 else None
    (total,) = store.spend(run.id)
    (useful,) = store.spend(run.id, kept=True)
    (wasted,) = store.spend(run.id, kept=False)
    saved = store.spend(run.id, kept=True, before=last_start)[0] if last_start else {}
    return {
        "run_id": run.id,
        "status": run.status.value,
        "interruptions": run.interruptions,
        "total": _dollars(total),
        "useful": _dollars(useful),
        "wasted": _dollars(wasted),
        # paid calls whose answer never came back: the process died or a drain gave up
        "lost_in_flight": _dollars(store.spend(run.id, error_class="LostInFlight")[0]),
        "saved_by_resume": _dollars(saved),
        "saved_by_cache": store.cache_savings(run.id),
        # model calls cannot be undone: everything a cancelled run spent is spent for nothing
        "cancelled_work": _dollars(total) if run.status == RunStatus.CANCELLED else None,
        "by_model": [_dollars(r) for r in store.spend(run.id, by="model")],
        "by_step": [_dollars(r) for r in store.spend(run.id, by="step")],
        "top_documents": [
            _dollars(r) for r in store.spend(run.id, by="document", limit=TOP_DOCUMENTS)
        ],
    }


def run_summary(store: Store, run: Run) -> dict[str, Any]:
    counts = store.counts(run.id)
    owner = store.owner_of(run.id)
    return {
        "run_id": run.id,
        "status": run.status.value,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "inputs": run.inputs,
        "settings": run.settings,
        "documents": {
            "total": counts.total,
            "done": counts.done,
            "failed": counts.failed,
            "skipped": counts.skipped,
            "pending": counts.pending,
            "running": counts.running,
        },
        "steps": counts.by_step,
        "cost": cost_summary(store, run.id),
        "interruptions": run.interruptions,
        "cancel_requested": run.cancel_requested,
        "owner": asdict(owner) if owner else None,
        "sessions": [asdict(s) for s in store.sessions(run.id)],
        "failures": _failures(store, run.id),
        "deliveries": store.delivery_counts(run.id),
    }


def _failures(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The documents that failed or were skipped, with why (those a cancel skipped are
    counted as skipped, not listed)."""
    troubled = itertools.islice(store.documents(run_id, with_reason=True), MAX_FAILURES_LISTED)
    return [{"path": doc.path, "status": doc.status.value, "step": doc.step,
             "reason": doc.reason, "error": doc.error} for doc in troubled]  # fmt: skip


def export_rows(store: Store, run_id: str) -> Iterator[dict[str, Any]]:
    """One row per document, streamed in discovery order, with each step's record."""
    steps = store.step_states(run_id)
    pending_step: StepState | None = next(steps, None)
    for doc in store.documents(run_id):
        mine: dict[Step, StepState] = {}
        while pending_step is not None and pending_step.doc_id == doc.id:
            mine[pending_step.step] = pending_step
            pending_step = next(steps, None)
        row = _row(doc, mine)
        row["steps"] = {step.value: _step_detail(state) for step, state in mine.items()}
        troubled = any(s.attempts > 1 or s.status != "done" for s in mine.values())
        row["failed_attempts"] = store.failures(doc.id) if troubled else []
        yield row


def _step_detail(state: StepState) -> dict[str, Any]:
    return {
        "status": state.status.value,
        "attempts": state.attempts,
        "completed_at": state.completed_at,
        "artifact": state.artifact,
        "input_tokens": state.input_tokens,
        "output_tokens": state.output_tokens,
        # a step with a call of unknown price cost an unknown amount, never a silent zero
        "cost_usd": None if state.unpriced_calls else state.cost_usd,
    }


def _row(doc: Document, steps: dict[Step, StepState]) -> dict[str, Any]:
    summary = steps.get(Step.SUMMARIZE)
    found = steps.get(Step.ENTITIES)
    priced = all(s.unpriced_calls == 0 for s in steps.values())
    return {
        "path": doc.path,
        "sha256": doc.sha256,
        "status": doc.status.value,
        "reason": doc.reason,
        "error": doc.error,
        "summary": summary.output if summary and summary.status == "done" else None,
        "entities": found.output if found and found.status == "done" else [],
        "cost_usd": sum((s.cost_usd or 0 for s in steps.values()), Decimal(0)) if priced else None,
        "input_tokens": sum(s.input_tokens for s in steps.values()),
        "output_tokens": sum(s.output_tokens for s in steps.values()),
    }


Writer = Callable[[Iterator[dict[str, Any]], IO[str]], int]


def write_file(path: Path, rows: Iterator[dict[str, Any]], write: Writer, *,
               force: bool = False) -> int:  # fmt: skip
    """Write to a temporary file beside ``path``, then rename it into place: a reader
    never sees half an export, and an existing file is replaced only with ``force``."""
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name, e.g. -o {path / 'results'}")
    if path.exists() and not force:
        raise UsageError(f"{path} already exists; add --force to replace it, or pick another -o")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # readable by its owner only, as the database and the deliveries: results are
        # the user's data (chmod it to share it)
        handle = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with open(handle, "w", encoding="utf-8", newline="") as out:
            count = write(rows, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}; pick another -o") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return count


def write_jsonl(rows: Iterator[dict[str, Any]], out: IO[str]) -> int:
    count = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False, default=money.as_json) + "\n")
        count += 1
    return count


def write_csv(rows: Iterator[dict[str, Any]], out: IO[str]) -> int:
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    count = 0
    for row in rows:
        entities = "; ".join(f"{e['text']} ({e['type']})" for e in row["entities"])
        flat = {name: row[name] for name in EXPORT_FIELDS}
        flat["cost_usd"] = money.text(row["cost_usd"])
        writer.writerow({**flat, "entities": entities})
        count += 1
    return count
