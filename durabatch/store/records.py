"""The values the store hands out and takes in; nothing here knows SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from durabatch.models.base import CallRecord


class RunStatus(StrEnum):
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    HALTED = "halted"
    PAUSED = "paused"
    DONE = "done"


class DocStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class Step(StrEnum):
    EXTRACT = "extract"
    SUMMARIZE = "summarize"
    ENTITIES = "entities"

    def next(self) -> Step | None:
        order = list(Step)
        index = order.index(self)
        return order[index + 1] if index + 1 < len(order) else None


class StepStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    ABANDONED = "abandoned"


@dataclass(frozen=True)
class Run:
    id: str
    status: RunStatus
    settings: dict[str, Any]
    inputs: list[str]
    created_at: str
    updated_at: str
    interruptions: int
    discovered: bool

    @property
    def finished(self) -> bool:
        return self.status == RunStatus.DONE


@dataclass(frozen=True)
class Owner:
    """Who works on a run now: one session of one process."""

    session_id: str
    host: str
    pid: int
    since: str


@dataclass(frozen=True)
class SessionInfo:
    id: str
    run_id: str
    host: str
    pid: int
    started_at: str
    ended_at: str | None
    outcome: str | None


@dataclass(frozen=True)
class NewDocument:
    path: str
    source: str
    size: int


@dataclass(frozen=True)
class Document:
    id: int
    run_id: str
    seq: int
    path: str
    source: str
    size: int
    sha256: str | None
    status: DocStatus
    step: Step | None
    reason: str | None
    error: str | None


@dataclass(frozen=True)
class Work:
    """One step of one document, claimed by a session and ready to execute."""

    document: Document
    step: Step
    attempt: int
    text_artifact: str | None = None
    partials: tuple[Any, ...] = ()
    # the document's first step in this session, its text read by an earlier one: check the file
    recheck: bool = False


@dataclass(frozen=True)
class StepResult:
    output: Any
    artifact: str | None = None
    sha256: str | None = None
    calls: tuple[CallRecord, ...] = ()
    cache_key: str | None = None  # what the answer depends on, hashed
    cached_from: str | None = None  # "run_id:path" when the answer was reused
    saved_usd: Decimal | None = None  # what the reused answer had cost


@dataclass(frozen=True)
class CachedStep:
    output: Any
    source: str
    cost_usd: Decimal | None
    artifact: str | None = None


@dataclass(frozen=True)
class StepFailure:
    error_class: str
    message: str
    reason: str
    terminal: bool
    skipped: bool = False
    calls: tuple[CallRecord, ...] = ()


@dataclass(frozen=True)
class StepState:
    doc_id: int
    step: Step
    status: StepStatus
    attempts: int
    output: Any
    artifact: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    unpriced_calls: int
    completed_at: str | None
    cache_key: str | None = None
    cached_from: str | None = None
    saved_usd: Decimal | None = None


@dataclass(frozen=True)
class Event:
    seq: int
    run_id: str
    at: str
    type: str
    doc_id: int | None
    step: str | None
    data: dict[str, Any]


@dataclass
class Counts:
    total: int = 0
    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    by_step: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def unfinished(self) -> int:
        return self.pending + self.running


@dataclass(frozen=True)
class Compaction:
    """What ``compact`` did: ``folded`` events became the one ``snapshot`` event."""

    run_id: str
    folded: int
    events_before: int
    events_after: int
    snapshot_seq: int | None
    bytes_before: int
    bytes_after: int
