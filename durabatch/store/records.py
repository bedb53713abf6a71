"""The values the store hands out and takes in; nothing here knows SQL."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
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
    CANCELLED = "cancelled"


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
    DELIVER = "deliver"  # only in runs given --deliver-to

    def next(self, *, deliver: bool = False) -> Step | None:
        return _AFTER[deliver].get(self)


# the steps every run makes; DELIVER follows them when the run has a target
PIPELINE = (Step.EXTRACT, Step.SUMMARIZE, Step.ENTITIES)
# each step's next one, in a run without a target (False) and with one (True)
_AFTER = {deliver: dict(itertools.pairwise(order))
          for deliver, order in ((False, PIPELINE), (True, (*PIPELINE, Step.DELIVER)))}  # fmt: skip
# the steps a model answers
MODEL_STEPS = (Step.SUMMARIZE, Step.ENTITIES)


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
    # `durabatch cancel` asked for it: never resumed again, whatever its status says
    cancel_requested: bool = False

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
    text: str | None = None  # the extracted text when the database holds it
    partials: tuple[Any, ...] = ()
    # the document's first step in this session, its text read by an earlier one: check the file
    recheck: bool = False
    # deliver only: the outputs of the document's earlier steps, by step name
    results: dict[str, Any] = field(default_factory=dict)
    # deliver only: the document's deliveries so far (a generation, a file that is ours)
    earlier: tuple[Delivery, ...] = ()


@dataclass(frozen=True)
class StepResult:
    output: Any
    artifact: str | None = None
    sha256: str | None = None
    calls: tuple[CallRecord, ...] = ()
    cache_key: str | None = None  # what the answer depends on, hashed
    cached_from: str | None = None  # "run_id:path" when the answer was reused
    saved_usd: Decimal | None = None  # what the reused answer had cost
    text: str | None = None  # extracted text to keep in the database under ``artifact``
    delivery: Delivered | None = None  # deliver only: what was published, to undo it


# how a session that only delivered or withdrew ends: not a session that processed documents
SIDE_SESSION = "deliveries: "
CANCELLED_BY = "cancelled by `durabatch cancel`"


def delivers(settings: Mapping[str, Any]) -> bool:
    """Does a run end each document with a deliver step? Its stored settings say, and
    only they: the engine, the store and the replay all ask here."""
    return bool(settings.get("deliver_to"))


class DeliveryStatus(StrEnum):
    DELIVERING = "delivering"  # written down before the side effect: it may have happened
    DELIVERED = "delivered"
    WITHDRAWN = "withdrawn"  # compensated: the file removed, the receiver told
    LEFT = "left"  # not withdrawn, on purpose: the file changed since (``undo`` says why)
    UNDO_FAILED = "undo_failed"  # not withdrawn yet (``undo`` says why); tried again
    REFUSED = "refused"  # the target refused it: nothing was delivered, nothing to undo


# what a compensation still has to undo
UNDOABLE = (DeliveryStatus.DELIVERED, DeliveryStatus.DELIVERING, DeliveryStatus.UNDO_FAILED)


@dataclass(frozen=True)
class Delivered:
    """One side effect, with what is needed to undo it."""

    target: str  # the folder (absolute) or the webhook URL, as given
    kind: str  # "folder" or "webhook"
    location: str  # the file written, or the URL posted to
    sha256: str  # of the bytes delivered
    key: str  # the Idempotency-Key
    receiver_id: str | None = None  # what the webhook answered, to address the undo
    http_status: int | None = None
    compensate_url: str | None = None  # the webhook's DELETE URL template ({id}, {key})
    made_dirs: tuple[str, ...] = ()  # folders that did not exist before: removed when empty
    generation: int = 0  # earlier withdrawals of this content from this target: in the keys


@dataclass(frozen=True)
class Delivery(Delivered):
    id: int = 0
    run_id: str = ""
    doc_id: int = 0
    status: DeliveryStatus = DeliveryStatus.DELIVERED
    undo: str | None = None
    delivered_at: str = ""
    undone_at: str | None = None


@dataclass(frozen=True)
class CachedStep:
    output: Any
    source: str
    cost_usd: Decimal | None
    artifact: str | None = None
    inline: bool = False  # the artifact's text is in the database, not in a file


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
