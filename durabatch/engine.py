"""claim -> execute -> checkpoint, for every document of a run.

The main thread is the only writer. It claims the next step of up to
``concurrency`` documents, hands each to a daemon worker thread (or, for the
embedded engine's steps on short texts, runs it itself between commits: see
``Engine._inline``; the extraction of a file of up to 1 MiB it hands to a parser
process itself, and polls: see ``Engine._parse_here``), and commits what comes
back: results (which also claim each document's next step), a failure, or a
partial result of a long document, which the worker waits for before its next
model call. The results that arrived together commit in one transaction with
the claims of fresh documents for the free slots: one fsync for many steps
(group commit). Workers never write to the database (each reads earlier
answers to the same inputs on a connection of its own), so a step's outcome is
durable before the next step of that document starts, and a step that
committed is never handed out again.

Discovery streams: the folder walk adds documents in small batches between turns
of the loop, so the first step starts after the first batch, not after the last
file of a folder of 100,000 was found.

A drain (first SIGINT/SIGTERM) stops claiming, gives in-flight steps
``grace`` seconds to commit, abandons the rest (they run again on resume),
and marks the run interrupted; a second signal leaves at once. Either way the
database stays consistent: SQLite rolls back what was not committed.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import json
import math
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from durabatch import amend, budget, discovery, names
from durabatch.budget import PaidCall
from durabatch.config import Settings
from durabatch.errors import (
    Cancelled,
    DeliveryHalt,
    DocumentError,
    ExitCode,
    HaltError,
    NotFinished,
    ProviderOutage,
    Reason,
)
from durabatch.models.base import CallRecord, Provider
from durabatch.pricing import PriceBook, parse_prices
from durabatch.sandbox import Parse, ParserPool
from durabatch.steps import entities, extract, summarize
from durabatch.steps.context import StepContext
from durabatch.store import Store
from durabatch.store.base import CacheLookups
from durabatch.store.records import (
    CANCELLED_BY,
    MODEL_STEPS,
    CachedStep,
    Counts,
    Delivered,
    DocStatus,
    Document,
    NewDocument,
    Owner,
    Run,
    RunStatus,
    Step,
    StepFailure,
    StepResult,
    Work,
    delivers,
)

if TYPE_CHECKING:
    from durabatch.targets import Target

DISCOVERY_BATCH = 500
PREFETCH = 64  # pending documents read at once
# The writer gives up the GIL in every commit; with workers busy it would then wait up to
# Python's default 5 ms switch interval to get it back, per commit. Runs of the overhead
# bench's 1,000 documents with the interval patched were about 20% faster at the default
# concurrency with 1 ms (shorter was no better).
SWITCH_SECONDS = 0.001
DISCOVERY_SLICE = 0.05  # seconds of walking before the loop commits what came back
DISCOVERY_MIN = 64
SECOND_SIGNAL_NOTE = "second signal: stopping now; resume picks up from the last commit"
POLL_SECONDS = 0.2
# the longest text whose embedded-engine steps run on the writer's thread (see _inline):
# one piece of the engine's window (unless --max-input-tokens is smaller), tens of
# milliseconds of work at most
INLINE_CHARS = 16_000
INLINE_REHASH_BYTES = 1 << 20  # ... and the largest file it hashes again there
# the largest file whose extraction this thread hands to a parser process itself (it hashes
# the file first, to look for text of the same bytes): see _parse_here
PARSE_HERE_BYTES = 1 << 20
# how long the writer waits on its parses before it looks at what the workers sent
PARSE_POLL_SECONDS = 0.002
LOCAL_SLICE = 0.05  # seconds of those steps before the loop commits and beats again
STEPS: dict[Step, Callable[[Work, StepContext], StepResult]] = {
    Step.EXTRACT: extract.run,
    Step.SUMMARIZE: summarize.run,
    Step.ENTITIES: entities.run,
    Step.DELIVER: lambda work, ctx: _deliver(work, ctx),
}
# only model steps are answered from the cache; deliver must happen in each run
CACHEABLE = MODEL_STEPS
CANCEL_POLL_SECONDS = 1.0  # how soon a live run notices `durabatch cancel`
Looked = tuple[str, CachedStep | None]  # a step's cache key, and the earlier answer found


def _deliver(work: Work, ctx: StepContext) -> StepResult:
    # imported when a run delivers: its HTTP client is no cost to a run that does not
    from durabatch import deliver

    return deliver.run(work, ctx)


class Observer(Protocol):
    """Told what happens, to show it; the engine never imports Rich."""

    def started(self, run: Run, counts: Counts) -> None: ...
    def discovered(self, total: int) -> None: ...
    def step_done(self, work: Work, detail: str, finished: DocStatus | None) -> None: ...
    def finished(self, works: Sequence[Work]) -> None:
        """The documents whose last step just committed, told once a commit."""
        ...

    def note(self, message: str) -> None: ...


@dataclass(frozen=True)
class Outcome:
    run_id: str
    status: RunStatus
    counts: Counts
    exit_code: int


@dataclass(frozen=True)
class _Finished:
    work: Work
    result: StepResult | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class _Partial:
    work: Work
    index: int
    output: Any
    calls: Sequence[CallRecord]
    done: threading.Event


@dataclass(frozen=True)
class _Reserve:
    """A worker asks the writer to write a paid call down before making it (and, under
    --max-cost, to hold its worst case)."""

    work: Work
    call: PaidCall
    done: threading.Event
    refused: list[BaseException]


@dataclass(frozen=True)
class _Intent:
    """A worker asks the writer to write a delivery down (``delivering``) before it is
    sent or written, so that no side effect can happen without a record to undo it; in a
    drain the writer refuses (Cancelled) and nothing is sent."""

    work: Work
    planned: Delivered
    done: threading.Event
    refused: list[BaseException]


Message = _Finished | _Partial | _Reserve | _Intent


class Engine:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        provider: Provider,
        observer: Observer,
        draining: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.provider = provider
        self.observer = observer
        self.draining = draining or threading.Event()
        self.parsers = ParserPool(pdf_engine=settings.pdf_engine, stopping=self.draining)
        self._results: queue.Queue[Message] = queue.Queue()
        self._tasks: queue.Queue[Work | None] = queue.Queue()
        self._inflight: dict[int, Work] = {}
        # the embedded engine's model steps run on this thread, between commits (see _inline)
        self._local: collections.deque[Work] = collections.deque()
        # ... and those on workers one at a time: they compute under the GIL, so more at once
        # gain nothing, and at --concurrency 1024 they left this thread waiting so long for
        # the GIL at every statement that the lease lapsed
        self._computing = threading.Lock()
        # the extractions this thread hands to parser processes itself (see _parse_here):
        # waiting for a free parser, and under way
        self._parsing: collections.deque[Work] = collections.deque()
        self._parses: dict[int, tuple[Work, Parse]] = {}
        self._context: StepContext | None = None  # the run's, once its loop began
        self._handed: dict[int, float] = {}  # when each step in flight was handed out
        self._answered = -math.inf  # when a model last answered a step (monotonic)
        self._done: list[tuple[Work, StepResult]] = []  # results not yet committed
        self._pending: collections.deque[Document] = collections.deque()
        self._last_beat = time.monotonic()
        self._drain_reason: str | None = None
        self._stopped_by: HaltError | NotFinished | None = None
        self._announced = False
        self._cancelled = False
        self._last_look = time.monotonic()
        self.target: Target | None = None
        self._delivers = False  # set from the run's stored settings when it is processed
        # the dollars the user typed, exactly; None without --max-cost
        self._limit = None if settings.max_cost is None else Decimal(str(settings.max_cost))

    # -- public -------------------------------------------------------------

    def process(self, run: Run) -> Outcome:
        """Own the run, finish discovery, process every document; release the run.

        A halt (exit 3) or a pause (exit 75) raised by a step stops the run the way a
        signal does, then is raised again here, after the run was released."""
        owner = self.store.acquire(run.id, self.settings.lease_ttl)
        # what resume changed (a budget, a model, prices: see amend), written down now that
        # this session owns the run
        if changes := amend.changes(self.settings, run.settings):
            run = self.store.change_settings(run.id, changes)
        self._delivers = delivers(run.settings)
        if self.store.cancel_requested(run.id):  # cancelled while nobody owned it
            self._cancelled = True
            self.drain(CANCELLED_BY)
        try:
            self.observer.started(run, self.store.counts(run.id))
            found = None if run.discovered else self._walk(run)
            if found is None:
                self._check_inputs(run)
            if not self.draining.is_set():
                self._loop(run, owner, found)
        except (HaltError, NotFinished) as exc:
            self._stop_with(exc)
            raise
        finally:
            try:
                status = self._stop(run, owner)
            finally:  # even when stopping failed: a parser left alive would hold up the exit
                self.parsers.close()
        if self._stopped_by is not None:
            raise self._stopped_by
        counts = self.store.counts(run.id)
        if status == RunStatus.CANCELLED:
            code = ExitCode.CANCELLED
        elif status != RunStatus.DONE:
            code = ExitCode.NOT_FINISHED
        else:
            code = ExitCode.FAILED_DOCUMENTS if counts.failed else ExitCode.OK
        return Outcome(run.id, status, counts, code)

    def _stop_with(self, error: HaltError | NotFinished) -> None:
        """The first halt (else the first pause) wins; the run drains as if signalled."""
        first = self._stopped_by is None
        if first or (isinstance(error, HaltError) and isinstance(self._stopped_by, NotFinished)):
            self._stopped_by = error
        if first:
            self.drain(type(error).__name__)

    def drain(self, reason: str = "stop requested") -> None:
        """Stop claiming work; let what is in flight finish within the grace.

        Safe in a signal handler: it only sets flags; the note is printed by the loop."""
        self._drain_reason = reason
        self.draining.set()

    def _stopping(self) -> bool:
        if self.draining.is_set() and not self._announced:
            self._announced = True
            grace = f"finishing in-flight steps (up to {self.settings.grace:g}s)"
            reason = self._drain_reason or "stop requested"
            if self._stopped_by is None and reason.startswith("SIG"):
                self.observer.note(f"{reason}: {grace}; send it again to stop at once")
            elif self._stopped_by is None:
                self.observer.note(f"{reason}: {grace}")
            else:
                self.observer.note(f"stopping the run ({self._drain_reason}): {grace}")
        return self.draining.is_set()

    def _check_inputs(self, run: Run) -> None:
        """Every file still to be extracted gone at once is a disk not mounted yet or a
        folder moved, not so many bad documents: halt (exit 3) and fail none of them.
        Stops at the first file found, so a healthy resume looks at one."""
        missing, example = 0, ""
        for source in self.store.unfinished_sources(run.id):
            if os.path.lexists(source) or names.undo(Path(source)) is not None:
                return  # (a name that is not UTF-8 is stored written out: undo finds it)
            missing, example = missing + 1, example or source
        if missing >= 2:  # one document gone is that document's failure (missing)
            raise HaltError(
                f"none of the {missing} documents of run {run.id} still to extract can be found "
                f"(e.g. {example}): is their disk mounted, or their folder moved? Put them "
                f"back, then `durabatch resume`; to give them up, `durabatch cancel {run.id}`"
            )

    # -- discovery -------------------------------------------------------------

    def _walk(self, run: Run) -> Iterator[NewDocument | None]:
        return discovery.walk(
            run.inputs,
            Path(run.settings["cwd"]),
            include=run.settings.get("include", []),
            exclude=run.settings.get("exclude", []),
            ignore=[*self.store.own_files(), *_delivery_folder(run)],
        )

    def _discover(self, run: Run, found: Iterator[NewDocument | None]) -> bool:
        """Add the next batch of found documents; True once the walk is over.

        A batch ends at ``DISCOVERY_BATCH`` documents, ``DISCOVERY_SLICE`` seconds or
        (past ``DISCOVERY_MIN`` documents) when a worker has something for the writer, so
        the loop claims and commits steps between batches: work starts after the first
        batch, not after the last. A long stretch of files the globs leave out ends a
        batch the same way (the walk yields None while it passes over them). A drain ends
        the batch at once; the run is then not marked discovered, and resume walks again,
        adding only what is new."""
        batch: list[NewDocument] = []
        ends = time.monotonic() + DISCOVERY_SLICE
        for doc in found:
            if doc is not None:
                batch.append(doc)
            # a worker has something for the writer, or a parse ended: answer it soon,
            # though not for each document found (every batch is a commit)
            waiting = (doc is None or len(batch) >= DISCOVERY_MIN) and (
                not self._results.empty() or (len(batch) % 16 == 0 and self._parse_ended())
            )
            if (
                len(batch) >= DISCOVERY_BATCH
                or time.monotonic() > ends
                or waiting
                or (self._stopping())
            ):
                if batch:
                    self.store.add_documents(run.id, batch)
                return False
        self.store.add_documents(run.id, batch)
        self.store.finish_discovery(run.id)
        total = self.store.counts(run.id).total
        self.observer.discovered(total)
        if total == 0:
            self.observer.note(
                f"no documents found under {', '.join(run.inputs)}; check the paths and "
                "the --include/--exclude globs (they match the path or the file name)"
            )
        return True

    # -- the loop ------------------------------------------------------------------

    def _loop(self, run: Run, owner: Owner, found: Iterator[NewDocument | None] | None) -> None:
        """Claim, hand out, commit; while ``found`` (the walk) lasts, one batch of
        discovery per turn, and no waiting for results that have not come yet."""
        context = StepContext(
            self.settings, self.provider, self.store.artifacts, self.parsers, _unbound,
            target=self._open_target(run),
        )  # fmt: skip
        for _ in range(self.settings.in_flight):
            threading.Thread(target=self._work, args=(context,), daemon=True).start()
        cache = None if self.settings.no_cache else self.store.reader(on_writer=True)
        self._context = replace(context, reuse=cache.cached_extraction if cache else None)
        try:
            while not self._stopping():
                if found is not None and self._discover(run, found):
                    found = None
                self._commit(owner, run)
                if not self._inflight and found is None:
                    return
                ran = self._run_parses(owner) + self._run_local(owner, context, cache)
                # wait for the workers only when this thread has nothing to do: nothing ran
                # here (a step that failed here freed a slot, claimed on the next turn),
                # nothing to commit, nothing queued
                idle = not ran and not self._done and not self._local
                if (found is None and idle) or not self._results.empty():
                    self._collect(owner)
                self._beat(run, owner)
        finally:
            if cache is not None:
                cache.close()

    def _commit(self, owner: Owner, run: Run | None = None) -> None:
        """Commit the results gathered so far, with the claims of each document's next
        step and (given ``run``) of fresh documents for the free slots, in one transaction;
        only then hand the claimed steps out and tell the observer."""
        while True:
            done, self._done = self._done, []
            claim = not self.draining.is_set()
            free = self.settings.in_flight - len(self._inflight)
            free -= sum(1 for work, _ in done if self._next(work) is not None) if claim else 0
            fresh = self._fresh(run, free) if run and claim and free > 0 else []
            if not done and not fresh:
                return
            try:
                with self.store.batch():
                    following = [self.store.complete_step(owner, work, result, claim_next=claim)
                                 for work, result in done]  # fmt: skip
                    started = self.store.start_steps(owner, fresh) if fresh else []
            except BaseException:
                self._done[:0] = done  # still finished: the drain commits them, or gives them back
                raise
            for claimed in [*following, *started]:
                if claimed is not None:
                    self._inflight[claimed.document.id] = claimed
                    self._handed[claimed.document.id] = time.monotonic()
                    if self._inline(claimed):
                        self._local.append(claimed)
                    elif self._parse_here(claimed):
                        self._extract_here(owner, claimed)
                    else:
                        self._tasks.put(claimed)
            if finished := [work for work, _ in done if self._next(work) is None]:
                self.observer.finished(finished)

    def _fresh(self, run: Run, count: int) -> list[Document]:
        """Up to ``count`` pending documents, first in discovery order. They are read
        ``PREFETCH`` at a time: only this session changes them, and one that becomes
        pending again (a failed attempt) is read with the next lot."""
        if len(self._pending) < count:
            self._pending = collections.deque(
                self.store.pending_documents(run.id, max(count, PREFETCH))
            )
        return [self._pending.popleft() for _ in range(min(count, len(self._pending)))]

    def _open_target(self, run: Run) -> Target | None:
        spec = run.settings.get("deliver_to")
        if spec and self.target is None:
            from durabatch import deliver

            cwd = Path(run.settings["cwd"])
            self.target = deliver.make_target(self.settings, spec, cwd, self.draining)
        return self.target

    def _next(self, work: Work) -> Step | None:
        return work.step.next(deliver=self._delivers)

    def _cache_key(self, work: Work) -> str | None:
        """What a model step's answer depends on, hashed; None for any other step: extract
        has its own cache, and a delivery is a side effect, never an answer to reuse."""
        if work.step not in CACHEABLE or not work.document.sha256:
            return None
        model = self.settings.model_for(work.step)
        inputs = [work.document.sha256, work.step, self.provider.name,
                  getattr(self.provider, "url", ""), getattr(self.provider, "version", ""), model,
                  self.settings.max_input_tokens or self.provider.window_tokens(model)]  # fmt: skip
        version = extract.extractor_version(work.document.source, self.settings.pdf_engine)
        if version != extract.EXTRACTOR_VERSION:  # the answer was made from another engine's text
            inputs.append(version)
        return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()

    def _inline(self, work: Work) -> bool:
        """The embedded engine's model steps hold the GIL throughout, and on a short text
        take milliseconds (tens at most): on a worker thread, each would cost two
        hand-offs and a fight for the GIL with this thread's commits. They run here
        instead, between commits. A long text stays on a worker, and so does a step that
        first hashes a large file again (``recheck``: the first step of a document in
        this session; a 100 MB file on a slow disk takes seconds), so that neither a
        drain's grace nor its note nor the lease waits for them."""
        rehash = work.recheck and work.document.size > INLINE_REHASH_BYTES
        return (self._embedded(work) and not rehash and work.text is not None
                and len(work.text) <= INLINE_CHARS)  # fmt: skip

    def _parse_here(self, work: Work) -> bool:
        """An extraction of a file this thread hashes in a moment: it hands the file to a
        parser process itself and takes the text in between commits, with no worker
        thread in between. Each wake-up of a thread cost this one the GIL (about 200 us
        of waiting to get it back, at 32 documents in flight); the parse still runs in a
        process of its own, under its deadline. A larger file is extracted on a worker."""
        return work.step == Step.EXTRACT and work.document.size <= PARSE_HERE_BYTES

    def _extract_here(self, owner: Owner, work: Work) -> None:
        """An extraction ``_parse_here`` keeps: text of the same bytes from before, found
        now (no parser needed), or the file queued for a parser process."""
        assert self._context is not None
        try:  # a file that grew past PARSE_HERE_BYTES is not hashed here: it is parsed
            reused = extract.reused(work, self._context, PARSE_HERE_BYTES)
        except Exception as exc:
            self._handle(owner, _Finished(work, error=exc))
            return
        if reused is not None:
            self._handle(owner, _Finished(work, result=reused))
        else:
            self._parsing.append(work)

    def _run_parses(self, owner: Owner, *, starting: bool = True) -> int:
        """Take in the parses this thread started that ended, start those queued while a
        parser process is free, and send those just started. In a drain (or, without
        ``starting``, as the session stops) the queued ones are given back unstarted:
        it waits for the parses under way, not for those queued. Returns how many
        ended, started or were given back."""
        ran = self._poll_parses(owner)
        if self._parsing and (self.draining.is_set() or not starting):
            ran += len(self._parsing)
            self._give_back(owner, self._parsing, "the run is stopping: its parse was not started")
        started = 0
        while self._parsing:
            work = self._parsing[0]
            try:
                parse = self.parsers.start(work.document.source,
                                           max_bytes=self.settings.max_bytes,
                                           timeout=self.settings.extract_timeout)  # fmt: skip
            except Exception as exc:  # the pool is closing
                self._parsing.popleft()
                self._handle(owner, _Finished(work, error=exc))
                ran += 1
                continue
            if parse is None:
                break  # every parser is busy
            self._parsing.popleft()
            self._parses[work.document.id] = (work, parse)
            started += 1
        return ran + started + (self._poll_parses(owner) if started else 0)

    def _give_back(self, owner: Owner, works: collections.deque[Work], why: str) -> None:
        """Steps this thread holds and never started, abandoned in one transaction."""
        given = list(works)
        works.clear()
        self.store.abandon(owner, given, why)  # if it fails, the shutdown gives them back
        for work in given:
            del self._inflight[work.document.id]
            self._handed.pop(work.document.id, None)

    def _poll_parses(self, owner: Owner) -> int:
        """Send what waits to be sent; take in each parse that ended. Returns how many."""
        ended = 0
        for doc_id, (work, parse) in list(self._parses.items()):
            try:
                extracted = parse.poll()
                if extracted is None:
                    continue
                assert self._context is not None
                finished = _Finished(work, result=extract.result_of(work, extracted,
                                                                    self._context))  # fmt: skip
            except Exception as exc:
                finished = _Finished(work, error=exc)
            del self._parses[doc_id]
            self._handle(owner, finished)
            ended += 1
        return ended

    def _parse_ended(self) -> bool:
        """Whether a parse this thread started has something to take in (or failed)."""
        return bool(self._parses) and self._wait_parses(0)

    def _await_parses(self) -> None:
        """Until a parse this thread started can be polled, or its deadline; while workers
        also have steps, a short while only: what they send does not wake this wait."""
        here = len(self._parses) + len(self._parsing) + len(self._local)
        soonest = min(parse.deadline for _, parse in self._parses.values()) - time.monotonic()
        wait = PARSE_POLL_SECONDS if len(self._inflight) > here else POLL_SECONDS
        self._wait_parses(max(0.0, min(wait, soonest)))

    def _wait_parses(self, seconds: float) -> bool:
        """Up to ``seconds`` for a parse's pipe to have something; whether one has."""
        try:
            return bool(wait_for([parse.conn for _, parse in self._parses.values()], seconds))
        except (OSError, ValueError):  # a parser killed: its poll tells
            return True

    def _embedded(self, work: Work) -> bool:
        """A model step of the embedded engine: Python computing, under the GIL."""
        return self.provider.name == "local" and work.step in MODEL_STEPS

    def _run_local(self, owner: Owner, context: StepContext, cache: CacheLookups | None) -> int:
        """The steps ``_inline`` keeps here, for ``LOCAL_SLICE`` seconds at most: then the
        loop commits what they gave and keeps the lease alive (at --concurrency 1024 the
        lot could take longer than the lease). A drain starts none of those left (they
        are given back with the steps in flight, and it does not wait for them). Returns
        how many ran."""
        ran, ends = 0, time.monotonic() + LOCAL_SLICE
        answers = self._answers(self._local, cache) if self._local and cache else {}
        while self._local and not self.draining.is_set() and time.monotonic() < ends:
            work = self._local.popleft()
            looked = answers.get(work.document.id)
            self._handle(owner, self._step(work, context, cache, inline=owner, looked=looked))
            ran += 1
            if self._parses or self._parsing:  # keep the parser processes busy meanwhile
                ran += self._run_parses(owner)
        return ran

    def _answers(self, works: Sequence[Work], cache: CacheLookups) -> dict[int, Looked]:
        """The cache key of each of ``works`` and the earlier answer found for it, by
        document, from one lookup: a statement each would cost the GIL each time."""
        keys = {work.document.id: (key, work.document.sha256) for work in works
                if (key := self._cache_key(work)) is not None}  # fmt: skip
        found = cache.cached_steps([(key, sha) for key, sha in keys.values() if sha])
        return {doc_id: (key, found.get(key)) for doc_id, (key, _) in keys.items()}

    def _collect(self, owner: Owner) -> None:
        """Take in what the workers sent; with nothing there, wait for it up to
        ``POLL_SECONDS``, or while this thread has parses under way, for them."""
        waits = not self._parses
        if self._parses and self._results.empty():
            self._await_parses()
        try:
            message = self._results.get(block=waits, timeout=POLL_SECONDS if waits else None)
        except queue.Empty:
            return
        while True:
            self._handle(owner, message)
            try:
                message = self._results.get_nowait()
            except queue.Empty:
                return

    def _handle(self, owner: Owner, message: Message) -> None:
        work = message.work
        if self._inflight.get(work.document.id) is not work:
            return  # abandoned at the end of a drain; its step runs again on resume
        if isinstance(message, _Reserve):
            try:
                self._reserve(owner, message)
            except (HaltError, NotFinished) as exc:
                message.refused.append(exc)
            finally:
                message.done.set()
            return
        if isinstance(message, _Intent):
            try:
                if self.draining.is_set():
                    raise Cancelled("the run is stopping: the delivery was not started")
                doc = work.document
                self.store.intend_delivery(owner, doc.run_id, doc.id, message.planned, work)
            except (Cancelled, HaltError, NotFinished) as exc:
                message.refused.append(exc)
            finally:
                message.done.set()
            return
        if isinstance(message, _Partial):
            self._save_partial(owner, work, message.index, message.output, message.calls)
            message.done.set()
            return
        del self._inflight[work.document.id]
        handed = self._handed.pop(work.document.id, math.inf)
        if message.result is not None:
            self._note_answers(message.result.calls)
            self._done.append((work, message.result))  # committed with those that came with it
        else:
            assert message.error is not None
            self._fail(owner, work, message.error, handed)

    def _note_answers(self, calls: Sequence[CallRecord]) -> None:
        if any(call.ok and call.provider != "local" for call in calls):
            self._answered = time.monotonic()

    def _fail(self, owner: Owner, work: Work, error: BaseException, handed: float) -> None:
        if isinstance(error, ProviderOutage):
            # past the retry budget: an outage pauses the run, unless the model answered
            # other documents meanwhile, or this step met that before: then it is this
            # document the server cannot take, and pausing would stop the others for good
            failures = self._failures(work)
            if self._answered > handed or any(f["error_class"] == ONE_DOCUMENT
                                               for f in failures):  # fmt: skip
                self._fail_attempt(
                    owner, work, _one_document(error, len(failures) + 1, self.settings.max_attempts)
                )
                return
        if isinstance(error, SourceChanged):
            self.store.restart_document(owner, work, error.sha256)
            self.observer.note(f"{work.document.path} changed since it was read: starting over")
            return
        if isinstance(error, Cancelled):
            self.store.abandon(owner, [work], str(error), error.calls)
            return
        if isinstance(error, HaltError | NotFinished):
            # a receiver that answered no took nothing: its delivery is refused with the abandon
            refused = isinstance(error, DeliveryHalt)
            self.store.abandon(owner, [work], error.message, error.calls, refused=refused)
            self._stop_with(error)
            return
        failed_before = len(self._failures(work))
        self._fail_attempt(owner, work, _failure(error, failed_before + 1,
                                                 self.settings.max_attempts))  # fmt: skip

    def _failures(self, work: Work) -> list[dict[str, Any]]:
        """The earlier failed attempts of this step of this document."""
        return [f for f in self.store.failures(work.document.id) if f["step"] == work.step]

    def _fail_attempt(self, owner: Owner, work: Work, failure: StepFailure) -> None:
        self.store.fail_step(owner, work, failure)
        finished = None
        if failure.terminal:
            finished = DocStatus.SKIPPED if failure.skipped else DocStatus.FAILED
        self.observer.step_done(work, f"{failure.reason}: {failure.message}", finished)

    def _beat(self, run: Run, owner: Owner) -> None:
        if time.monotonic() - self._last_look >= CANCEL_POLL_SECONDS:
            self._last_look = time.monotonic()
            if not self._cancelled and self.store.cancel_requested(run.id):
                self._cancelled = True
                self.drain(CANCELLED_BY)
        if time.monotonic() - self._last_beat >= self.settings.lease_ttl / 3:
            self.store.heartbeat(run.id, owner, self.settings.lease_ttl)
            self._last_beat = time.monotonic()

    # -- workers (never write to the store) ------------------------------------------

    def _work(self, context: StepContext) -> None:
        """Run the steps handed out until the run ends (None). Each worker looks up earlier
        answers on a read connection of its own: the writer spends nothing on a miss."""
        cache = None if self.settings.no_cache else self.store.reader()
        try:
            while (work := self._tasks.get()) is not None:
                self._results.put(self._step(work, context, cache))
        finally:
            if cache is not None:
                cache.close()

    def _step(self, work: Work, context: StepContext, cache: CacheLookups | None,
              inline: Owner | None = None, looked: Looked | None = None) -> _Finished:  # fmt: skip
        """One step, on a worker thread or (``inline``: this session's owner) on the
        writer's own, which saves the pieces of a text split by --max-input-tokens
        itself. ``looked``: its cache key and earlier answer, already looked up."""
        checkpoint = (functools.partial(self._checkpoint, work) if inline is None
                      else functools.partial(self._save_partial, inline, work))  # fmt: skip
        own = replace(context, checkpoint=checkpoint,
                      intend=functools.partial(self._intend, work),
                      reuse=None if cache is None else cache.cached_extraction)  # fmt: skip
        guard = budget.Guard(functools.partial(self._guard, work), self._limit is not None)
        token = budget.current.set(guard if self.provider.name != "local" else None)
        try:
            if work.recheck:  # the file is checked before any earlier answer is reused
                _same_source(work, self.settings.max_bytes)
            key: str | None
            if looked is not None:
                key, hit = looked
            else:
                key, content = self._cache_key(work), work.document.sha256
                hit = cache.cached_step(key, content) if cache and key and content else None
            if key is not None and hit is not None:
                return _Finished(work, result=_from_cache(key, hit))
            one_at_a_time = inline is None and self._embedded(work)
            with self._computing if one_at_a_time else contextlib.nullcontext():
                result = STEPS[work.step](work, own)
            if key is not None:
                result = replace(result, cache_key=key)
            return _Finished(work, result=result)
        except BaseException as exc:
            return _Finished(work, error=exc)
        finally:
            budget.current.reset(token)

    def _guard(self, work: Work, call: PaidCall) -> None:
        """Runs in a worker before each paid attempt; the writer decides."""
        message = _Reserve(work, call, threading.Event(), [])
        self._results.put(message)
        self._wait_for_writer(work, message.done)
        if message.refused:
            raise message.refused[0]

    def _reserve(self, owner: Owner, message: _Reserve) -> None:
        call = message.call
        price = self.store.prices.price(call.engine, call.host, call.model)
        worst = price.cost(call.most_input_tokens, call.max_output_tokens) if price else None
        if worst is None and self._limit is not None:
            raise HaltError(
                f"the price of {call.model} at {call.host} is not known, so under "
                "--max-cost the call would be made blind; give its price in durabatch.toml "
                "[prices], then `durabatch resume` (or `durabatch resume --prices FILE`)"
            )
        self.store.reserve(owner, message.work, call, worst, self._limit)

    def _intend(self, work: Work, planned: Delivered) -> None:
        message = _Intent(work, planned, threading.Event(), [])
        self._results.put(message)
        self._wait_for_writer(work, message.done)
        if message.refused:
            raise message.refused[0]

    def _checkpoint(self, work: Work, index: int, output: Any, calls: Sequence[CallRecord]) -> None:
        done = threading.Event()
        self._results.put(_Partial(work, index, output, calls, done))
        self._wait_for_writer(work, done)

    def _save_partial(self, owner: Owner, work: Work, index: int, output: Any,
                      calls: Sequence[CallRecord]) -> None:  # fmt: skip
        self._note_answers(calls)
        self.store.save_partial(owner, work, index, output, calls)

    def _wait_for_writer(self, work: Work, done: threading.Event) -> None:
        while not done.wait(POLL_SECONDS):
            if self._inflight.get(work.document.id) is not work:
                raise Cancelled("the step was abandoned")

    # -- stopping -----------------------------------------------------------------

    def _stop(self, run: Run, owner: Owner) -> RunStatus:
        """Wait out the grace for in-flight steps, abandon the rest, release the run."""
        deadline = time.monotonic() + self.settings.grace
        self._stopping()
        try:
            self._commit(owner)
            # steps kept for this thread that it never started are not waited for, nor the
            # parses it had not started: those are given back (see _run_parses)
            while True:
                self._run_parses(owner, starting=False)
                self._commit(owner)
                if len(self._inflight) <= len(self._local) or time.monotonic() >= deadline:
                    break
                self._collect(owner)
                self._beat(run, owner)  # a long grace must not let the lease lapse
        except (HaltError, NotFinished) as exc:  # the store itself failed: stop now
            self._stop_with(exc)
        for _ in range(self.settings.in_flight):
            self._tasks.put(None)  # the workers end (those still in a step, after it)
        self.parsers.close()
        self._parses.clear()  # killed with the parsers: given back below
        self._parsing.clear()
        if self.target is not None:
            self.target.close()
        for work, result in self._done:  # finished, but even the drain could not commit them
            self.store.abandon(owner, [work], "shutdown: its commit failed", result.calls)
        self._done.clear()
        if self._inflight:
            self.store.abandon(owner, list(self._inflight.values()), "shutdown")
            self._inflight.clear()
        discovered = self.store.get_run(run.id).discovered
        finished = discovered and not self.store.counts(run.id).unfinished
        stopped = self._stopped_by
        if self._cancelled:
            status, outcome = RunStatus.CANCELLED, CANCELLED_BY
        elif isinstance(stopped, HaltError):
            status, outcome = RunStatus.HALTED, f"halted: {stopped.message}"
        elif finished:
            status, outcome = RunStatus.DONE, "finished"
        elif stopped is not None:
            status, outcome = RunStatus.PAUSED, f"paused: {stopped.message}"
        else:
            status, outcome = RunStatus.INTERRUPTED, f"interrupted: {self._drain_reason}"
        self.store.release(run.id, owner, status, outcome)
        return status


def _delivery_folder(run: Run) -> list[Path]:
    """A run delivering into a folder among its inputs must not process its own results."""
    spec = run.settings.get("deliver_to")
    if not spec or spec.startswith(("http://", "https://")):
        return []
    return [Path(run.settings["cwd"]) / spec]


def _unbound(index: int, output: Any, calls: Sequence[CallRecord]) -> None:
    raise AssertionError("each worker binds the checkpoint to its own work")


def _from_cache(key: str, hit: CachedStep) -> StepResult:
    """A model step answered by an earlier identical one, at no cost."""
    return StepResult(hit.output, cache_key=key, cached_from=hit.source, saved_usd=hit.cost_usd)


class SourceChanged(Exception):
    def __init__(self, sha256: str | None) -> None:
        super().__init__(f"the file now hashes to {sha256}")
        self.sha256 = sha256


def _same_source(work: Work, max_bytes: int) -> None:
    """On a document's first step in this session: is the file what was extracted?
    A file that can no longer be read keeps the text already taken from it."""
    now = extract.file_sha256(Path(work.document.source), max_bytes)
    if now is not None and now != work.document.sha256:
        raise SourceChanged(now)


ONE_DOCUMENT = "ProviderOutageOfOneDocument"  # error_class of the failures below


def _one_document(error: ProviderOutage, failures: int, max_attempts: int) -> StepFailure:
    """The model kept failing one document's calls past the retry budget while it answered
    the others: a failed attempt of that step (``failures`` counts this one)."""
    terminal = failures >= max_attempts
    cause = error.__cause__ or error  # what the last attempt met, without the outage's advice
    message = (
        f"the API kept failing this document's calls ({cause}; {len(error.calls)} attempts) "
        "while it answered other documents"
    )
    if terminal:
        message += (
            f" (failed {failures} times; look for what in this document the server cannot "
            "take, then add it to a new run)"
        )
    return StepFailure(ONE_DOCUMENT, message, Reason.ERROR, terminal, calls=tuple(error.calls))


def _failure(error: BaseException, failures: int, max_attempts: int) -> StepFailure:
    """``failures`` counts this one; interruptions do not use up a step's attempts."""
    calls = tuple(getattr(error, "calls", ()))  # what a failed attempt spent is kept
    name = type(error).__name__
    if isinstance(error, DocumentError):
        return StepFailure(name, error.message, str(error.reason), True, error.skipped, calls)
    message = f"{name}: {error}"
    terminal = failures >= max_attempts
    if terminal:
        message += (
            f" (failed {failures} times; this looks like a bug in durabatch or in a parser: "
            "please report it with the file's type)"
        )
    return StepFailure(name, message, Reason.ERROR, terminal, calls=calls)


@contextlib.contextmanager
def drain_on_signals(engine: Engine) -> Iterator[None]:
    """First SIGINT/SIGTERM drains; a second one exits at once."""

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if engine.draining.is_set():
            # nothing here may raise or block: a half-run handler would let the main
            # thread go on committing steps the shutdown broke. os.write is reentrant.
            try:
                os.write(2, f"{name} again: {SECOND_SIGNAL_NOTE}\n".encode())
                engine.parsers.kill_now()
            finally:
                os._exit(ExitCode.NOT_FINISHED)
        engine.drain(name)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _on_failure(store: Store, run: Run, settings: Settings, observer: Observer,
                stopping: threading.Event) -> None:  # fmt: skip
    """--on-failure compensate: a run that ends with failures keeps nothing delivered."""
    if settings.on_failure != "compensate":
        return
    from durabatch import compensate  # with an HTTP client: only when it can be needed

    if compensate.owed(store, store.get_run(run.id)):
        compensate.after_failure(store, run, settings, observer.note, stopping)


def process_run(store: Store, run: Run, settings: Settings, observer: Observer) -> Outcome:
    """Process a run to its end, or until a signal (or a spot notice) drains it."""
    from durabatch.models import make_provider

    stopping = threading.Event()
    store.prices = PriceBook(parse_prices(settings.prices, "your prices"), settings.price_provider)
    provider = make_provider(settings, stopping)
    engine = Engine(store, settings, provider, observer, draining=stopping)
    watcher = None
    if settings.watch_spot:
        from durabatch import spot  # imports an HTTP client: only when asked for

        source = spot.make_source(settings.watch_spot, settings.spot_base_url)
        watcher = spot.SpotWatcher(source, settings.spot_interval, engine.drain, observer.note)
        watcher.start()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_SECONDS)
    try:
        with drain_on_signals(engine):
            outcome = engine.process(run)
            if outcome.status == RunStatus.DONE and outcome.counts.failed:
                _on_failure(store, run, settings, observer, stopping)
            return outcome
    finally:
        sys.setswitchinterval(switch)
        if watcher is not None:
            watcher.stop()
        close = getattr(provider, "close", None)
        if close is not None:
            close()
