"""What a run would cost, before it spends anything.

``estimate`` extracts every document (keeping the text in the database, so a
later ``run`` over the same files does not parse them again), cuts the text
into the same pieces the steps would send, and prices the calls:

- input tokens: the prompt and the piece, at about four characters per token
  for ASCII text and one token per other character (accents, CJK), plus a few
  tokens of chat template per message;
- output tokens: a five-sentence summary (``SUMMARY_TOKENS``) per summarize
  call, and a share of the piece for the entities' JSON (``ENTITY_SHARE``);
- the summarize step's extra calls that combine the summaries of a long
  document's pieces.

The expected dollars carry a stated margin (``MARGIN``); "at most" is the
same bound ``--max-cost`` reserves: input counted as one token per byte and
every answer as long as ``max_output_tokens``.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from durabatch import discovery
from durabatch.artifacts import ArtifactStore
from durabatch.config import Settings
from durabatch.errors import DocumentError, DocumentSkipped
from durabatch.formats import Extracted
from durabatch.models.base import Provider
from durabatch.pricing import Price, PriceBook, parse_prices
from durabatch.sandbox import ParserPool
from durabatch.steps.chunks import piece_chars, split_text
from durabatch.steps.extract import content_key, describe, reusable
from durabatch.store import Store
from durabatch.store.records import NewDocument
from durabatch.tokens import CHARS_PER_TOKEN, approx_tokens

STOP_POLL_SECONDS = 0.1  # how soon a wait for a parse notices a signal
MARGIN = Decimal("0.25")  # the expected dollars are within this share of the real cost
SUMMARY_TOKENS = 120  # the prompt asks for at most five sentences
ENTITY_SHARE = 0.35  # entities JSON per token of text: ~1 entity per 25 words, ~12 tokens each
ENTITY_BASE_TOKENS = 16  # '{"entities": []}' and the message around it
MESSAGE_TOKENS = 8  # chat template per message
WORST_MESSAGE_BYTES = 16  # the budget's bound per message (see models.openai)


@dataclass
class StepCost:
    """One step's calls and tokens over the corpus, and their price."""

    step: str
    model: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    most_input_tokens: int = 0
    most_output_tokens: int = 0

    def add(self, prompt: str, piece: str, output_tokens: int, max_output: int) -> None:
        self.calls += 1
        self.input_tokens += approx_tokens(prompt) + approx_tokens(piece) + 2 * MESSAGE_TOKENS
        self.output_tokens += min(output_tokens, max_output)
        sent = len(prompt.encode()) + len(piece.encode()) + 2 * WORST_MESSAGE_BYTES + 32
        self.most_input_tokens += sent
        self.most_output_tokens += max_output

    def priced(self, price: Price | None) -> dict[str, Any]:
        expected = price.cost(self.input_tokens, self.output_tokens) if price else None
        most = price.cost(self.most_input_tokens, self.most_output_tokens) if price else None
        return {
            "step": self.step,
            "model": self.model,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "expected_usd": expected,
            "low_usd": None if expected is None else expected * (1 - MARGIN),
            "high_usd": None if expected is None else expected * (1 + MARGIN),
            "most_usd": most,
            "price_source": price.source if price else "unknown price",
        }


@dataclass
class Tally:
    total: int = 0
    parsed: int = 0
    reused: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)


class Planner:
    """Adds each document's calls to its step, the way the steps would cut the text."""

    def __init__(self, settings: Settings, provider: Provider) -> None:
        from durabatch.models.entities_json import SCHEMA
        from durabatch.models.openai import ENTITIES_PROMPT, SUMMARY_PROMPT

        self.settings = settings
        self.provider = provider
        self.summary_prompt = SUMMARY_PROMPT
        # servers count the JSON schema sent with the entities request as input
        self.entities_prompt = ENTITIES_PROMPT + json.dumps(SCHEMA)
        self.steps = {
            step: StepCost(step, settings.model_for(step)) for step in ("summarize", "entities")
        }

    def add(self, text: str) -> None:
        most = self.settings.max_output_tokens
        summarize = self.steps["summarize"]
        limit = piece_chars(self.settings, self.provider, summarize.model)
        pieces = split_text(text, limit)
        for piece in pieces:
            summarize.add(self.summary_prompt, piece, SUMMARY_TOKENS, most)
        partials = ["x" * SUMMARY_TOKENS * CHARS_PER_TOKEN] * len(pieces)
        while len(partials) > 1:  # the combining rounds of a long document
            rounds = split_text("\n\n".join(partials), limit)
            for piece in rounds:
                summarize.add(self.summary_prompt, piece, SUMMARY_TOKENS, most)
            if len(rounds) == 1:
                break
            partials = partials[: len(rounds)]
        entities = self.steps["entities"]
        for piece in split_text(text, piece_chars(self.settings, self.provider, entities.model)):
            share = ENTITY_BASE_TOKENS + math.ceil(approx_tokens(piece) * ENTITY_SHARE)
            entities.add(self.entities_prompt, piece, share, most)

    def report(self, prices: PriceBook, tally: Tally) -> dict[str, Any]:
        host = getattr(self.provider, "host", None)
        steps = [
            cost.priced(prices.price(self.provider.name, host, cost.model))
            for cost in self.steps.values()
        ]
        total: dict[str, Decimal | None] = {}
        for key in ("expected_usd", "low_usd", "high_usd", "most_usd"):
            values = [row[key] for row in steps]
            total[key] = None if None in values else sum(values, Decimal(0))
        return {
            "documents": {
                "total": tally.total,
                "extracted": tally.parsed + tally.reused,
                "parsed": tally.parsed,
                "reused": tally.reused,
                "not_extracted": len(tally.failures),
            },
            "failures": tally.failures,
            "provider": self.provider.name,
            "margin": MARGIN,
            "steps": steps,
            "total": total,
        }


class Interrupted(Exception):
    """``stopping`` was set (a signal): the estimate stopped between two documents."""


def estimate(
    store: Store,
    settings: Settings,
    provider: Provider,
    paths: list[str],
    progress: Callable[[Tally], None] | None = None,
    stopping: threading.Event | None = None,
) -> dict[str, Any]:
    """Extract (or reuse) every document under ``paths`` and price what a run would send.
    Raises ``Interrupted`` soon after ``stopping`` is set; what was extracted is kept."""
    planner = Planner(settings, provider)
    tally = Tally()
    for doc, text, failure in extract_all(store, settings, paths, tally, stopping):
        tally.total += 1
        if text is not None:
            planner.add(text)
        elif failure is not None:
            tally.failures.append({"path": doc.path, **failure})
        if progress:
            progress(tally)
    prices = PriceBook(parse_prices(settings.prices, "your prices"), settings.price_provider)
    return planner.report(prices, tally)


Outcome = tuple[NewDocument, str | None, dict[str, str] | None]


def extract_all(store: Store, settings: Settings, paths: list[str], tally: Tally,
                stopping: threading.Event | None = None) -> Iterator[Outcome]:  # fmt: skip
    """Each document's text: reused when the same bytes were extracted before, else
    parsed in worker processes (several at once), then kept for the later run.

    ``stopping`` is looked at between documents and while parses are awaited, never by
    an exception thrown into the middle of the work (a signal handler raising one could
    land inside a lock's acquire and leave it held: the estimate then hung)."""
    docs = discovery.discover(paths, Path.cwd(), settings.include, settings.exclude,
                              ignore=store.own_files())  # fmt: skip
    parsers = ParserPool(pdf_engine=settings.pdf_engine, stopping=stopping)
    pending: set[Future[_Parsed]] = set()
    workers = max(1, settings.in_flight)
    with ThreadPoolExecutor(workers, thread_name_prefix="durabatch-estimate") as pool:
        try:
            for doc in docs:
                _go_on(stopping)
                reused = None if settings.no_cache else _reused(store, settings, doc)
                if reused is not None:
                    tally.reused += 1
                    yield doc, reused, None
                    continue
                pending.add(pool.submit(_parse, store.artifacts, settings, parsers, doc))
                if len(pending) >= 2 * workers:  # a stream: memory stays flat
                    done, pending = _first_done(pending, stopping)
                    yield from _settled(store, settings, done, tally)
            while pending:
                done, pending = _first_done(pending, stopping)
                yield from _settled(store, settings, done, tally)
        finally:  # before the pool waits for its threads: a parse in flight ends at once
            for future in pending:
                future.cancel()
            parsers.kill_now()
            parsers.close()


def _go_on(stopping: threading.Event | None) -> None:
    if stopping is not None and stopping.is_set():
        raise Interrupted


def _first_done(pending: _Parses, stopping: threading.Event | None) -> tuple[_Parses, _Parses]:
    """Wait for a parse to finish, looking at ``stopping`` every tenth of a second."""
    while True:
        done, rest = wait(pending, timeout=STOP_POLL_SECONDS, return_when=FIRST_COMPLETED)
        _go_on(stopping)
        if done:
            return done, rest


def _reused(store: Store, settings: Settings, doc: NewDocument) -> str | None:
    found = reusable(store.cached_extraction, store.artifacts, doc.source, settings.max_bytes,
                     settings.pdf_engine)  # fmt: skip
    if found is None:
        return None
    digest = str(found[2].artifact)
    text = store.inline_text(digest)
    return store.artifacts.get_text(digest) if text is None else text


@dataclass(frozen=True)
class _Parsed:
    doc: NewDocument
    extracted: Extracted | None = None
    artifact: str = ""
    failure: dict[str, str] | None = None


_Parses = set[Future[_Parsed]]  # parses handed to the thread pool


def _parse(artifacts: ArtifactStore, settings: Settings, parsers: ParserPool,
           doc: NewDocument) -> _Parsed:  # fmt: skip
    """In a pool thread: parse in a worker process, write the text; never the database."""
    try:
        extracted = parsers.extract(
            Path(doc.source), max_bytes=settings.max_bytes, timeout=settings.extract_timeout
        )
    except (DocumentError, DocumentSkipped) as exc:
        status = "skipped" if isinstance(exc, DocumentSkipped) else "failed"
        return _Parsed(doc, failure={"status": status, "reason": str(exc.reason),
                                     "error": exc.message})  # fmt: skip
    return _Parsed(doc, extracted, artifacts.put_text(extracted.text))


def _settled(store: Store, settings: Settings, done: set[Future[_Parsed]],
             tally: Tally) -> Iterator[Outcome]:  # fmt: skip
    """In the main thread: keep each new extraction for the later run."""
    for future in done:
        parsed = future.result()
        found = parsed.extracted
        if found is None:
            yield parsed.doc, None, parsed.failure
            continue
        key = content_key(found.sha256, parsed.doc.source, settings.pdf_engine)
        store.save_extraction(key, found.sha256, parsed.doc.path, describe(found),
                              parsed.artifact)  # fmt: skip
        tally.parsed += 1
        yield parsed.doc, found.text, None
