"""Wall-clock time as the store writes it: ISO 8601 in UTC, to the millisecond."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch() -> float:
    return time.time()


def epoch_of(iso: str) -> float:
    """Seconds since the epoch of a time written by ``now_iso``."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
