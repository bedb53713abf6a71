"""What a step gets to do its work: a model, the artifacts, the parsers, a checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from durabatch.artifacts import ArtifactStore
from durabatch.config import Settings
from durabatch.models.base import CallRecord, Provider
from durabatch.sandbox import ParserPool
from durabatch.store.records import CachedStep, Delivered

if TYPE_CHECKING:
    from durabatch.targets import Target

# save_partial(index, output, calls): commits one chunk's result before the next call
Checkpoint = Callable[[int, Any, Sequence[CallRecord]], None]
# reuse(cache_key, sha256): an earlier step's answer for the same inputs, or None
Reuse = Callable[[str, str], CachedStep | None]
# intend(planned): commits a delivery as `delivering` before it happens (Cancelled in a drain)
Intend = Callable[[Delivered], None]


@dataclass(frozen=True)
class StepContext:
    settings: Settings
    provider: Provider
    artifacts: ArtifactStore
    parsers: ParserPool
    checkpoint: Checkpoint
    reuse: Reuse | None = None  # None under --no-cache
    target: Target | None = None  # where the deliver step publishes; None without one
    intend: Intend | None = None  # bound per step by the engine
