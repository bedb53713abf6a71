"""The store's state machine under generated histories (hypothesis).

Any sequence of claims (also from stale reads), partial results, completions,
failures, reserved calls, stale writes, discovery cut short and resumed,
crashes (the store closed without releasing, then taken over) and clean pauses
keeps the tables equal to the replay of the events after every step, and agrees
with a small model of what each document should be. Finishing the run
afterwards always ends in the same state: every document that did not fail
terminally is ``done`` with outputs that depend only on (document, step).
``DURABATCH_PROPERTY_EXAMPLES`` raises the number of generated histories
(default 30).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from durabatch.budget import PaidCall
from durabatch.errors import StoreError
from durabatch.models.base import CallRecord
from durabatch.pricing import PriceBook
from durabatch.reports import export_rows
from durabatch.store.records import (
    PIPELINE,
    DocStatus,
    Document,
    NewDocument,
    Owner,
    RunStatus,
    Step,
    StepFailure,
    StepResult,
    StepStatus,
    Work,
)
from durabatch.store.sqlite import SQLiteStore
from durabatch.verify import verify

TTL = 30.0
EXAMPLES = int(os.environ.get("DURABATCH_PROPERTY_EXAMPLES", "30"))
STOPPED = [RunStatus.INTERRUPTED, RunStatus.PAUSED, RunStatus.HALTED]
PRICED = ("openai", "openai/gpt-5.4-mini")  # a model with a known price: dollars to replay


def text_of(path: str) -> str:
    return f"the text of {path}"


def output_of(path: str, step: Step) -> Any:
    """What a step returns: a function of the document and the step, nothing else."""
    if step == Step.EXTRACT:
        return {"chars": len(text_of(path))}
    if step == Step.SUMMARIZE:
        return f"{path}:{step}"
    return [{"text": f"{path}:{step}", "type": "OTHER"}]


def sha_of(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()


def call(priced: bool, error: str | None = None) -> CallRecord:
    provider, model = PRICED if priced else ("local", "local")
    return CallRecord(provider, model, input_tokens=100, output_tokens=20, latency_ms=1.0,
                      host="127.0.0.1", error=error)  # fmt: skip


@dataclass
class Expected:
    """What the model says one document is; the store must agree after every rule."""

    path: str
    status: DocStatus = DocStatus.PENDING
    step: Step | None = Step.EXTRACT
    done: list[Step] = field(default_factory=list)
    attempts: Counter[Step] = field(default_factory=Counter)
    partials: dict[Step, list[str]] = field(default_factory=dict)


class StoreMachine(RuleBasedStateMachine):
    root: Path  # the test's tmp_path; each generated history gets a folder inside it

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(dir=self.root))
        self.store: SQLiteStore | None = None
        self.docs: dict[int, Expected] = {}
        self.running: dict[int, Work] = {}  # claimed by the current owner, by document
        self.stale: list[tuple[Owner, Work]] = []  # completed, or of a session that ended
        self.seen: list[Document] = []  # documents as pending_documents once returned them
        self.reserved: Counter[int] = Counter()  # calls written down, by running document
        self.lost = 0  # reserved calls whose answer never came: LostInFlight attempts
        self.crashes = 0
        self.pauses = 0
        # set by every rule, cleared by the invariant once it passed: the final check
        # in teardown runs only when the last rule and its invariant both succeeded
        self.unchecked = True

    # -- the store and its owner --------------------------------------------------

    def open(self) -> None:
        self.store = SQLiteStore(self.folder / "s.db")
        self.store.prices = PriceBook(provider="gmi")  # the engine sets the run's book
        self.owner = self.store.acquire(self.run_id, TTL)

    @property
    def s(self) -> SQLiteStore:
        assert self.store is not None
        return self.store

    @initialize(n=st.integers(2, 6), found=st.integers(0, 6))
    def create(self, n: int, found: int) -> None:
        """A run of ``n`` documents, ``found`` of them discovered before the first owner
        (all: discovery finished; fewer: it was cut short and resumes as a rule)."""
        self.unchecked = True
        creator = SQLiteStore(self.folder / "s.db")
        self.run_id = creator.create_run({"cwd": "/"}, ["docs"]).id
        creator.close()
        self.open()
        self.every = [NewDocument(f"docs/{i}.txt", f"/docs/{i}.txt", 10) for i in range(n)]
        self.discovered = False
        self.discover(found, finish=True)

    def discover(self, more: int, finish: bool) -> None:
        """Walk the inputs again: what is known is ignored, new documents follow in order."""
        known = len(self.docs)
        upto = min(len(self.every), known + more)
        assert self.s.add_documents(self.run_id, self.every[:upto]) == upto - known
        rows = list(self.s.documents(self.run_id))
        assert [(d.seq, d.path) for d in rows] == [
            (seq, d.path) for seq, d in enumerate(self.every[:upto], 1)
        ]
        for doc in rows:
            self.docs.setdefault(doc.id, Expected(doc.path))
        if finish and upto == len(self.every):
            self.s.finish_discovery(self.run_id)
            self.discovered = True

    def claimed(self, work: Work) -> None:
        """Check a freshly claimed step against the model, and take it into it."""
        doc = self.docs[work.document.id]
        assert doc.step is not None
        assert work.step == (doc.step if doc.status == DocStatus.PENDING else doc.step.next())
        doc.step, doc.status = work.step, DocStatus.RUNNING
        doc.attempts[work.step] += 1
        assert work.attempt == doc.attempts[work.step]
        assert list(work.partials) == doc.partials.get(work.step, [])
        if work.step != Step.EXTRACT:
            assert work.text_artifact == hashlib.sha256(text_of(doc.path).encode()).hexdigest()
            assert work.document.sha256 == sha_of(doc.path)
        self.running[work.document.id] = work

    def settle(self, doc_id: int, returned: int) -> None:
        """Recording ``returned`` calls of a step settles its reservations: the ones
        beyond those returned were lost in flight."""
        self.lost += max(0, self.reserved.pop(doc_id, 0) - returned)

    def pick(self, data: st.DataObject) -> Work:
        return self.running[data.draw(st.sampled_from(sorted(self.running)), label="document")]

    # -- rules --------------------------------------------------------------------

    @precondition(lambda self: any(d.status == DocStatus.PENDING for d in self.docs.values()))
    @rule(limit=st.integers(1, 3))
    def claim(self, limit: int) -> None:
        self.unchecked = True
        docs = self.s.pending_documents(self.run_id, limit)
        pending = [i for i, d in self.docs.items() if d.status == DocStatus.PENDING]
        assert [d.id for d in docs] == sorted(pending)[:limit]  # in discovery order
        self.seen += docs
        for work in self.s.start_steps(self.owner, docs):
            assert self.docs[work.document.id].status == DocStatus.PENDING
            self.claimed(work)

    @precondition(lambda self: not self.discovered)
    @rule(more=st.integers(0, 6), finish=st.booleans())
    def resume_discovery(self, more: int, finish: bool) -> None:
        self.unchecked = True
        self.discover(more, finish)

    @precondition(lambda self: self.seen)
    @rule(data=st.data())
    def claim_an_old_snapshot(self, data: st.DataObject) -> None:
        """Claiming from a stale read of a document succeeds only if that step is still
        the document's pending step; otherwise it is refused and changes nothing."""
        self.unchecked = True
        old = data.draw(st.sampled_from(self.seen), label="old snapshot")
        doc = self.docs[old.id]
        if doc.status == DocStatus.PENDING and doc.step == old.step:
            (work,) = self.s.start_steps(self.owner, [old])
            self.claimed(work)
            return
        before = len(list(self.s.events(self.run_id)))
        with pytest.raises(StoreError):
            self.s.start_steps(self.owner, [old])
        assert len(list(self.s.events(self.run_id))) == before

    @precondition(lambda self: self.running)
    @rule(data=st.data(), partial=st.booleans(), claim_next=st.booleans(), priced=st.booleans(),
          cached=st.booleans())  # fmt: skip
    def complete(
        self, data: st.DataObject, partial: bool, claim_next: bool, priced: bool, cached: bool
    ) -> None:
        """Commit a step, after a checkpointed chunk or not; the answer made one call, or
        was reused from an earlier run (no call, what it had cost saved)."""
        self.unchecked = True
        work = self.pick(data)
        doc = self.docs[work.document.id]
        if partial:
            done = doc.partials.setdefault(work.step, [])
            piece = f"{doc.path}:{work.step}:chunk{len(done)}"
            self.s.save_partial(self.owner, work, len(done), piece, [call(priced)])
            self.settle(work.document.id, 1)
            done.append(piece)
        artifact = sha = None
        if work.step == Step.EXTRACT:
            artifact, sha = self.s.artifacts.put_text(text_of(doc.path)), sha_of(doc.path)
        result = StepResult(output_of(doc.path, work.step), artifact, sha, (call(priced),))
        if cached:
            key, source = f"key:{doc.path}:{work.step}", f"earlier:{doc.path}"
            result = replace(result, calls=(), cache_key=key, cached_from=source,
                             saved_usd=Decimal("0.0004"))  # fmt: skip
        following = self.s.complete_step(self.owner, work, result, claim_next=claim_next)
        self.settle(work.document.id, len(result.calls))
        del self.running[work.document.id]
        self.stale.append((self.owner, work))
        doc.done.append(work.step)
        if work.step.next() is None:
            assert following is None
            doc.status, doc.step = DocStatus.DONE, None
        elif claim_next:
            assert following is not None
            self.claimed(following)
        else:
            assert following is None
            doc.status, doc.step = DocStatus.PENDING, work.step.next()

    @precondition(lambda self: self.running)
    @rule(data=st.data(), fate=st.integers(0, 4), priced=st.booleans())
    def fail(self, data: st.DataObject, fate: int, priced: bool) -> None:
        """Mostly a retryable failure; now and then one that ends the document failed
        (fate 3) or skipped (fate 4)."""
        self.unchecked = True
        work = self.pick(data)
        doc = self.docs[work.document.id]
        terminal, skipped = fate >= 3, fate == 4
        failure = StepFailure("OSError", "disk hiccup", "error", terminal, skipped,
                              (call(priced, error="HTTP 500"),))  # fmt: skip
        self.s.fail_step(self.owner, work, failure)
        self.settle(work.document.id, 1)
        del self.running[work.document.id]
        if terminal:
            doc.status = DocStatus.SKIPPED if skipped else DocStatus.FAILED
        else:
            doc.status = DocStatus.PENDING

    @precondition(lambda self: self.running)
    @rule(data=st.data(), priced=st.booleans())
    def reserve(self, data: st.DataObject, priced: bool) -> None:
        """Write a paid call down before making it; if its answer never comes back (a
        crash), it is counted as lost in flight when the step is abandoned."""
        self.unchecked = True
        work = self.pick(data)
        provider, model = PRICED if priced else ("local", "local")
        paid = PaidCall(provider, "127.0.0.1", model, 100, 400, 50)
        self.s.reserve(self.owner, work, paid, None, None)
        self.reserved[work.document.id] += 1

    @precondition(lambda self: self.stale)
    @rule(data=st.data(), write=st.sampled_from(["complete", "fail", "partial", "abandon",
                                                 "reserve", "release", "heartbeat"]))  # fmt: skip
    def stale_write_is_refused(self, data: st.DataObject, write: str) -> None:
        """A completed step cannot complete, fail or change again; a session that ended
        cannot write over the one that owns the run now. Refused, nothing written."""
        self.unchecked = True
        owner, work = data.draw(st.sampled_from(self.stale), label="stale")
        if write in ("release", "heartbeat") and owner == self.owner:
            write = "complete"  # the current owner may release: only ended sessions may not
        before = (len(list(self.s.events(self.run_id))), self.s.spend(self.run_id))
        with pytest.raises(StoreError):
            self.stale_write(owner, work, write)
        assert (len(list(self.s.events(self.run_id))), self.s.spend(self.run_id)) == before

    def stale_write(self, owner: Owner, work: Work, write: str) -> None:
        if write == "complete":
            result = StepResult(output_of(work.document.path, work.step), None, None)
            self.s.complete_step(owner, work, result)
        elif write == "fail":
            self.s.fail_step(owner, work, StepFailure("OSError", "late", "error", True))
        elif write == "partial":
            self.s.save_partial(owner, work, 99, "late", [call(True)])
        elif write == "abandon":
            self.s.abandon(owner, [work], "late", [call(True)])
        elif write == "reserve":
            self.s.reserve(owner, work, PaidCall("local", None, "local", 1, 1, 1), None, None)
        elif write == "release":
            self.s.release(self.run_id, owner, RunStatus.DONE, "late")
        else:
            self.s.heartbeat(self.run_id, owner, TTL)

    @precondition(lambda self: self.running)
    @rule(crash=st.booleans(), give_back=st.booleans(), priced=st.booleans(),
          status=st.sampled_from(STOPPED))  # fmt: skip
    def stop(self, crash: bool, give_back: bool, priced: bool, status: RunStatus) -> None:
        """The process stops with steps in flight, then the run is resumed.

        A crash: the store is closed without a release, as a killed process loses its
        flock with its open files, and a new store takes the run over. A clean stop
        (SIGTERM drained, budget reached, halt): in-flight steps given back or not, the
        run released as interrupted, paused or halted, then acquired again. A single
        step given back brings the calls it had made, as the engine's drain does."""
        self.unchecked = True
        ended = self.owner
        returned = int(not crash and give_back and len(self.running) == 1)
        for doc_id in self.running:
            self.settle(doc_id, returned)
        if crash:
            self.s.close()
            self.open()
            self.crashes += 1
            (session,) = [s for s in self.s.sessions(self.run_id) if s.id == ended.session_id]
            assert session.outcome == "lost" and session.ended_at is not None
        else:
            if give_back:
                works = list(self.running.values())
                calls = [call(priced, error="cancelled")] if len(works) == 1 else []
                self.s.abandon(self.owner, works, "paused", calls)
            self.s.release(self.run_id, self.owner, status, "interrupted")
            assert self.s.get_run(self.run_id).status == status
            assert self.s.owner_of(self.run_id) is None
            self.owner = self.s.acquire(self.run_id, TTL)
            self.pauses += 1
        self.put_back(ended)

    def put_back(self, ended: Owner) -> None:
        for doc_id, work in self.running.items():
            self.docs[doc_id].status = DocStatus.PENDING
            self.stale.append((ended, work))
        self.running.clear()

    # -- what holds after every rule ------------------------------------------------

    @invariant()
    def tables_equal_the_replayed_events(self) -> None:
        if self.store is None:
            return
        assert verify(self.s, self.run_id) == []
        self.agrees_with_model()
        self.unchecked = False

    def agrees_with_model(self) -> None:
        counts = self.s.counts(self.run_id)
        parts = (counts.done, counts.failed, counts.skipped, counts.pending, counts.running)
        assert counts.total == sum(parts) == len(self.docs)
        assert self.s.get_run(self.run_id).discovered == self.discovered
        by_status = Counter(str(d.status) for d in self.docs.values())
        assert parts == tuple(by_status[s] for s in ("done", "failed", "skipped", "pending",
                                                     "running"))  # fmt: skip
        for doc in self.s.documents(self.run_id):
            assert (doc.status, doc.step) == (self.docs[doc.id].status, self.docs[doc.id].step)
        done = {(s.doc_id, s.step) for s in self.s.step_states(self.run_id)
                if s.status == StepStatus.DONE}  # fmt: skip
        assert done == {(i, step) for i, d in self.docs.items() for step in d.done}
        completions = Counter(
            (e.doc_id, e.step) for e in self.s.events(self.run_id) if e.type == "step_completed"
        )
        assert set(completions.values()) <= {1}  # never done twice
        assert sum(len(d.done) for d in self.docs.values()) == sum(completions.values())
        run = self.s.get_run(self.run_id)
        assert run.interruptions == self.crashes + self.pauses
        assert self.count_events("session_lost") == self.crashes
        (lost,) = self.s.spend(self.run_id, error_class="LostInFlight")
        assert lost["calls"] == self.lost

    def count_events(self, type_: str) -> int:
        return sum(1 for e in self.s.events(self.run_id) if e.type == type_)

    # -- the end: finish the run, and it is the same run whatever happened --------

    def teardown(self) -> None:
        try:
            if self.store is not None and not self.unchecked:
                self.finish()
                self.final_state_is_canonical()
        finally:
            if self.store is not None:
                self.store.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    def finish(self) -> None:
        if not self.discovered:
            self.discover(len(self.every), finish=True)
        while self.running or self.s.pending_documents(self.run_id, 1):
            docs = self.s.pending_documents(self.run_id, 100)
            for work in self.s.start_steps(self.owner, docs):
                self.claimed(work)
            for work in list(self.running.values()):
                following: Work | None = work
                while following is not None:
                    doc = self.docs[following.document.id]
                    artifact = sha = None
                    if following.step == Step.EXTRACT:
                        artifact = self.s.artifacts.put_text(text_of(doc.path))
                        sha = sha_of(doc.path)
                    out = output_of(doc.path, following.step)
                    result = StepResult(out, artifact, sha, (call(False),))
                    del self.running[doc_id := following.document.id]
                    doc.done.append(following.step)
                    following = self.s.complete_step(self.owner, following, result)
                    self.settle(doc_id, 1)
                    if following is not None:
                        self.claimed(following)
                    else:
                        self.docs[doc_id].status, self.docs[doc_id].step = DocStatus.DONE, None
        self.s.release(self.run_id, self.owner, RunStatus.DONE, "finished")

    def final_state_is_canonical(self) -> None:
        assert verify(self.s, self.run_id) == []
        self.agrees_with_model()
        ended = {i: d.status for i, d in self.docs.items() if d.status != DocStatus.DONE}
        assert set(ended.values()) <= {DocStatus.FAILED, DocStatus.SKIPPED}
        rows = {row["path"]: row for row in export_rows(self.s, self.run_id)}
        assert len(rows) == len(self.docs)
        for doc_id, doc in self.docs.items():
            row = rows[doc.path]
            if doc_id in ended:
                assert (row["status"], row["reason"]) == (ended[doc_id], "error")
                continue
            assert doc.done == list(PIPELINE)
            expected = {"status": "done", "sha256": sha_of(doc.path), "reason": None,
                        "error": None, "summary": output_of(doc.path, Step.SUMMARIZE),
                        "entities": output_of(doc.path, Step.ENTITIES)}  # fmt: skip
            assert {k: row[k] for k in expected} == expected
            assert {k: v["status"] for k, v in row["steps"].items()} == dict.fromkeys(
                ("extract", "summarize", "entities"), "done"
            )
        outputs = {(s.doc_id, s.step): s.output for s in self.s.step_states(self.run_id)
                   if s.status == StepStatus.DONE}  # fmt: skip
        for (doc_id, step), output in outputs.items():
            assert output == output_of(self.docs[doc_id].path, step)
        run = self.s.get_run(self.run_id)
        assert run.status == RunStatus.DONE
        assert run.interruptions == self.crashes + self.pauses
        assert self.count_events("session_lost") == self.crashes
        outcomes = Counter(s.outcome for s in self.s.sessions(self.run_id))
        assert outcomes == Counter(
            {"lost": self.crashes, "interrupted": self.pauses, "finished": 1}
        )


def test_any_history_of_completions_failures_and_crashes_ends_in_the_same_state(
    tmp_path: Path,
) -> None:
    class InTmpPath(StoreMachine):
        root = tmp_path

    run_state_machine_as_test(
        InTmpPath,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=25,
            deadline=None,
            database=None,  # failing histories are printed as steps, not kept on disk
        ),
    )
