"""Every error durabatch raises on purpose, and the exit code each one means.

    DurabatchError                 base; carries ``exit_code`` and a message
    +-- UsageError                 bad flag, missing path, unknown run id (2)
    +-- HaltError                  would fail every document: fix, then resume (3)
    |   +-- StoreError             the database cannot be opened or written
    |   |   +-- DatabaseDamaged    SQLite found the file damaged (a finding of `verify`)
    |   +-- AuthError              401/403: the API key is missing or refused
    |   +-- ModelNotFound          404: the server does not know the model
    |   +-- TargetHalt             a delivery folder cannot be written
    |       +-- DeliveryHalt       refused, not taken: a webhook's 401-405, a file for a folder
    +-- RunCancelled               a side session stopped for `durabatch cancel` (4)
    +-- NotFinished                resume later (75)
        +-- RunOwnedError          another live process owns the run
        +-- QuotaExhausted         429 insufficient_quota: pause until it is topped up
        +-- ProviderOutage         the retry budget ran out: pause, resume later
        +-- BudgetReached          --max-cost would be passed: pause, resume with more
        +-- TargetUnavailable      a delivery target kept failing: pause, resume later
    DocumentError                  one document cannot be processed; the run goes on
    +-- DocumentSkipped            ... and that is expected (skipped, not failed)
    RetryableError                 one attempt failed in a way worth retrying
    Cancelled                      a step stopped by the shutdown: abandoned, runs again

Errors raised by a model provider carry ``calls``: the record of every attempt
made before it gave up, so what a failure cost is stored too.

A ``DocumentError`` never reaches the user as an exit code: the engine turns it
into a per-document ``failed`` or ``skipped`` state with ``reason``.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from durabatch.models.base import CallRecord


class ExitCode:
    OK = 0
    FAILED_DOCUMENTS = 1
    USAGE = 2
    HALTED = 3
    CANCELLED = 4  # stopped by `durabatch cancel`: not resumed, unlike 75
    NOT_FINISHED = 75


class Reason(StrEnum):
    """Why a document ended ``failed`` or ``skipped``; stable strings for scripts."""

    ENCRYPTED = "encrypted"
    NO_TEXT_LAYER = "no_text_layer"
    MALFORMED = "malformed"
    EMPTY = "empty"
    UNSUPPORTED_TYPE = "unsupported_type"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"
    MISSING = "missing"
    CONTEXT_LENGTH = "context_length_exceeded"
    INVALID_JSON = "invalid_model_json"
    BAD_REQUEST = "bad_request"
    TRUNCATED = "truncated_reply"
    REFUSED = "model_refused"
    DELIVERY_REJECTED = "delivery_rejected"
    TARGET_EXISTS = "target_exists"
    TARGET_PATH = "target_path"  # the delivery file's name or place does not work there
    CANCELLED = "cancelled"  # the run was cancelled before the document was finished
    ERROR = "error"


class DurabatchError(Exception):
    exit_code = ExitCode.HALTED

    def __init__(self, message: str, calls: Sequence[CallRecord] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.calls = tuple(calls)


class UsageError(DurabatchError):
    exit_code = ExitCode.USAGE


class HaltError(DurabatchError):
    exit_code = ExitCode.HALTED


class StoreError(HaltError):
    pass


class DatabaseDamaged(StoreError):
    """The file's pages contradict each other: restore it or rebuild it; resume cannot help."""


class TargetHalt(HaltError):
    """A delivery target would fail every document (a folder that cannot be written).
    ``problem`` says what happened and what to fix; the message adds what to run next:
    ``then``, `durabatch resume` for a run."""

    def __init__(self, problem: str, then: str = "`durabatch resume`") -> None:
        super().__init__(f"{problem}, then {then}")
        self.problem = problem


class DeliveryHalt(TargetHalt):
    """The target took nothing (a webhook answered 401/403/404/405, a file stands where
    the folder should be): the delivery's row is ``refused`` (nothing to undo), and the
    run halts, as every delivery would be refused."""


class RunCancelled(DurabatchError):
    """A re-delivery or an --on-failure withdrawal stopped because the run was cancelled."""

    exit_code = ExitCode.CANCELLED


class NotFinished(DurabatchError):
    exit_code = ExitCode.NOT_FINISHED


class RunOwnedError(NotFinished):
    def __init__(self, run_id: str, host: str, pid: int, since: str) -> None:
        self.run_id, self.host, self.pid, self.since = run_id, host, pid, since
        who = f"pid {pid} on {host}" if pid else f"another process on {host}"
        super().__init__(
            f"run {run_id} is being processed by {who} since {since}; "
            "wait for it to finish, or stop that process and resume"
        )


class AuthError(HaltError):
    pass


class ModelNotFound(HaltError):
    pass


class QuotaExhausted(NotFinished):
    pass


class ProviderOutage(NotFinished):
    pass


class BudgetReached(NotFinished):
    pass


class TargetUnavailable(NotFinished):
    pass


class DocumentError(Exception):
    """One document cannot go on; ``reason`` is a ``Reason`` value."""

    skipped = False

    def __init__(self, reason: Reason, message: str, calls: Sequence[CallRecord] = ()) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.calls = tuple(calls)


class RetryableError(Exception):
    """A failed attempt worth retrying: 429, 5xx, timeout, dropped connection.

    ``retry_after`` is the server's own wait in seconds, when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DocumentSkipped(DocumentError):
    skipped = True


class Cancelled(Exception):
    """A step stopped because the run is shutting down; it is no document's fault."""

    def __init__(self, message: str, calls: Sequence[CallRecord] = ()) -> None:
        super().__init__(message)
        self.calls = tuple(calls)
