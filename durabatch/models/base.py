"""What a step may ask of a model, whichever engine answers.

Steps never speak HTTP or run rules themselves: they call a ``Provider``.
Every answer carries the ``CallRecord`` of each attempt it took, so the
engine can store tokens, latency and HTTP status beside the step result in
the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

T = TypeVar("T")

EntityType = Literal["PERSON", "ORG", "LOCATION", "DATE", "MONEY", "OTHER"]
ENTITY_TYPES: tuple[EntityType, ...] = ("PERSON", "ORG", "LOCATION", "DATE", "MONEY", "OTHER")


@dataclass(frozen=True)
class Entity:
    text: str
    type: EntityType

    def as_dict(self) -> dict[str, str]:
        return {"text": self.text, "type": self.type}


@dataclass(frozen=True)
class CallRecord:
    """One attempt at one model call, failed or not."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    http_status: int | None = None
    error: str | None = None
    error_class: str | None = None
    host: str | None = None
    retry: int = 1
    cached_tokens: int = 0  # input tokens the API says it served from its cache

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Reply(Generic[T]):
    value: T
    calls: tuple[CallRecord, ...] = field(default=())


class Provider(Protocol):
    """A model engine. ``summarize`` and ``entities`` may raise on failure."""

    name: str

    def window_tokens(self, model: str) -> int:
        """How many input tokens one call may carry."""
        ...

    def summarize(self, text: str, model: str) -> Reply[str]: ...

    def entities(self, text: str, model: str) -> Reply[list[Entity]]: ...


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about four characters a token)."""
    return max(1, (len(text) + 3) // 4) if text else 0
