"""The embedded offline engine: extractive summaries and rule-based entities.

No network, no key, no model download, standard library only; the same
text always gives the same answer, so a run with ``--provider local``
works anywhere and is reproducible. The model name is accepted and
ignored: there is one local model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from durabatch.models.base import CallRecord, Entity, Reply, estimate_tokens
from durabatch.models.local_entities import extract_entities
from durabatch.models.local_summary import summarize

T = TypeVar("T")

WINDOW_TOKENS = 8192


class LocalProvider:
    """A ``Provider`` that answers in-process, in well under a second."""

    name = "local"
    version = "1"  # change with the rules: cached answers of others are not reused

    def window_tokens(self, model: str) -> int:
        return WINDOW_TOKENS

    def summarize(self, text: str, model: str) -> Reply[str]:
        return _timed(model, text, summarize, lambda summary: summary)

    def entities(self, text: str, model: str) -> Reply[list[Entity]]:
        return _timed(model, text, extract_entities, _entities_json)


def _timed(model: str, text: str, run: Callable[[str], T], render: Callable[[T], str]) -> Reply[T]:
    started = time.perf_counter()
    value = run(text)
    latency_ms = (time.perf_counter() - started) * 1000
    call = CallRecord(
        provider="local",
        model=model,
        input_tokens=estimate_tokens(text),
        output_tokens=estimate_tokens(render(value)),
        latency_ms=latency_ms,
    )
    return Reply(value=value, calls=(call,))


def _entities_json(entities: list[Entity]) -> str:
    """The answer as an LLM would have written it, for a comparable token count."""
    items = ", ".join(f'{{"text": "{e.text}", "type": "{e.type}"}}' for e in entities)
    return f'{{"entities": [{items}]}}'
