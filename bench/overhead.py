"""What durability costs: `durabatch run` vs the same work in a plain loop, and the floor.

    .venv/bin/python bench/overhead.py [--docs 5000] [--concurrency 1,4,64] [--rounds 3]

Side by side, in one run, on the same disk:
- plain: the engine's own step functions (extract, summarize, entities) called for each
  document in a loop that keeps nothing, as the issue defines it: the same parser worker
  pool, chunking and embedded engine as a run (its own imports are done before the clock
  starts; the parser process starts inside it, as in a run);
- the calls alone: the parser pool and the embedded engine called directly, without the
  step functions around them: the baseline used before, printed beside;
- start-up: `durabatch run` over an empty folder: imports and a new database, paid
  once per run whatever its size (no parser process: it starts with the first document);
- durable: `durabatch run` over the same folder (local engine, synchronous=FULL) at each
  concurrency (64 is the embedded engine's default), on its default settings as the plain
  loop (none taken from DURABATCH_* or OPENAI_* in the environment);
- floor: one fsynced SQLite commit (WAL, synchronous=FULL) per step, nothing else: a
  one-row insert into a growing table, as a run's tables grow;
- the pages a step's commit writes (a 300-document run at concurrency 1 with WAL
  checkpoints switched off for that measurement, WAL frames over steps) and one fsynced
  commit rewriting that many pages of an existing table, next to the floor: what the
  size of a step's record costs on this disk;
- store alone: durabatch's own store writing down the same results (made beforehand by
  the step functions, untimed), each document's next step claimed in the commit that
  completes the one before, as many documents to a commit as the run's concurrency, and
  nothing else: no engine, no threads, no parsing, no model. What the record a step
  leaves (its state, its events, its calls) costs, apart from the engine around it;
- the two-process bound: the step functions run in this process, and each result goes
  through a pipe to durabatch's store in a second one, which commits the results that
  reached it together and claims the next steps.
Every process it starts reads modules compiled by a warm-up run of one document (a cache
in the bench's own temporary folder), as a usual install does after its first run, even
where PYTHONDONTWRITEBYTECODE is set (it is on the machine of the README's figures).
Prints the ratio durable / plain (target <= 1.15), also without the start-up and in CPU
time (the run's process with its parser processes, against the loop's), and what
durability adds per step next to the floor (target within 2x). Concurrency 1 is the
like-for-like figure: above it the run also works on several documents at once (parser
processes, model threads), which the plain loop does not, so the ratio there mixes
durability's cost with that gain. Everything is measured ``--rounds`` times, interleaved
(each round runs each thing once; each durable run gets a fresh database), and the
medians are printed with their range: on a shared machine one run can move by a third.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from statistics import median
from typing import Any

TARGET_RATIO = 1.15
STEPS_PER_DOC = 3


def make_docs(folder: Path, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        text = (
            f"Note {i} from the harbour office. Alice Morgan met the board of Northwind "
            f"Trading in Rotterdam on {i % 28 + 1} May 2025 to agree a budget of "
            f"${(i + 1) * 1000:,} for the depot works. The board asked for a report."
        )
        kind = i % 3
        if kind == 0:
            (folder / f"d{i:05d}.txt").write_text(text)
        elif kind == 1:
            (folder / f"d{i:05d}.md").write_text(f"# Note {i}\n\n{text}\n")
        else:
            (folder / f"d{i:05d}.html").write_text(f"<html><body><p>{text}</p></body></html>")


def plain(folder: Path, work: Path) -> float:
    """The engine's own step functions (extract, summarize, entities) called one after
    another for each document, as the issue defines the baseline: the same parser pool,
    the same chunking and the same embedded engine as a run, and nothing kept (no
    database, no cache: the texts are all short enough to stay in memory). What the step
    functions do besides is counted here too: extract's content key and the digest of
    its text (about 1% of a document); a run also looks up earlier text and answers,
    which is counted against durability."""
    from durabatch.artifacts import ArtifactStore
    from durabatch.config import Settings
    from durabatch.engine import STEPS
    from durabatch.models.local import LocalProvider
    from durabatch.sandbox import ParserPool
    from durabatch.steps.context import StepContext
    from durabatch.store.records import PIPELINE, DocStatus, Document, Step, Work

    pool = ParserPool()
    context = StepContext(Settings(), LocalProvider(), ArtifactStore(work / "plain"), pool,
                          one_piece)  # fmt: skip
    started = time.monotonic()
    try:
        for path in sorted(folder.iterdir()):
            # the step functions read a document's source only: no stat for its size
            doc = Document(0, "", 0, path.name, str(path), 0, None, DocStatus.RUNNING, None,
                           None, None)  # fmt: skip
            text = None
            for step in PIPELINE:
                result = STEPS[step](Work(doc, step, 1, text=text), context)
                text = result.text if step == Step.EXTRACT else text
    finally:
        pool.close()
    return time.monotonic() - started


def calls_only(folder: Path) -> float:
    """The plain loop used before: the parser pool and the embedded engine called
    directly, without the step functions around them (chunking, results)."""
    from durabatch.models.local import LocalProvider
    from durabatch.sandbox import ParserPool

    provider = LocalProvider()
    pool = ParserPool()
    started = time.monotonic()
    try:
        for path in sorted(folder.iterdir()):
            text = pool.extract(path, max_bytes=100 << 20, timeout=60).text
            provider.summarize(text, "local")
            provider.entities(text, "local")
    finally:
        pool.close()
    return time.monotonic() - started


Answers = dict[tuple[str, str], Any]


def answers(folder: Path, work: Path) -> Answers:
    """Every step's result for every document, made by the step functions themselves
    (untimed): what `store_alone` writes down without computing anything."""
    from durabatch.artifacts import ArtifactStore
    from durabatch.config import Settings
    from durabatch.models.local import LocalProvider
    from durabatch.sandbox import ParserPool
    from durabatch.steps.context import StepContext
    from durabatch.store.records import Step

    pool = ParserPool()
    context = StepContext(Settings(), LocalProvider(), ArtifactStore(work / "answers"), pool,
                          one_piece)  # fmt: skip
    found: Answers = {}
    try:
        for path in sorted(folder.iterdir()):
            text = None
            for step in (Step.EXTRACT, Step.SUMMARIZE, Step.ENTITIES):
                result = run_step(context, path, step, text)
                text = result.text if step == Step.EXTRACT else text
                found[path.name, step] = result
    finally:
        pool.close()
    return found


def one_piece(index: int, output: Any, calls: Any) -> None:
    raise AssertionError("the bench's documents are one piece each")


def run_step(context: Any, path: Path, step: Any, text: str | None) -> Any:
    """One step of one document by the engine's own step function, its answer keyed as
    the engine keys a model step's answer."""
    from durabatch.engine import STEPS
    from durabatch.store.records import DocStatus, Document, Step, Work

    doc = Document(0, "", 0, path.name, str(path), path.stat().st_size, None,
                   DocStatus.RUNNING, None, None, None)  # fmt: skip
    result = STEPS[step](Work(doc, step, 1, text=text), context)
    if step == Step.EXTRACT:
        return result
    key = hashlib.sha256(f"{path.name} {step}".encode()).hexdigest()
    return replace(result, cache_key=key)


def name_of(work: Any) -> str:
    return Path(work.document.path).name


def store_alone(folder: Path, work: Path, found: Answers, group: int, round_: int = 0) -> float:
    """durabatch's store writing down the answers ``found``, as the engine would (each
    document's next step claimed in the commit that completes the one before; ``group``
    documents at a time, their results in one commit), with nothing else: no threads,
    no parsing, no model. Seconds for the whole folder."""
    from durabatch import discovery
    from durabatch.config import Settings
    from durabatch.store import open_store
    from durabatch.store.records import RunStatus

    store = open_store(str(work / f"alone-{group}-{round_}.db"))
    try:
        settings = Settings(concurrency=group)
        run = store.create_run(settings.run_settings() | {"cwd": str(work)}, [str(folder)])
        started = time.monotonic()
        docs = [doc for doc in discovery.walk([str(folder)], work, include=[], exclude=[],
                                              ignore=[]) if doc is not None]  # fmt: skip
        store.add_documents(run.id, docs)
        store.finish_discovery(run.id)
        owner = store.acquire(run.id, settings.lease_ttl)
        pending = store.pending_documents(run.id, len(docs))
        inflight = store.start_steps(owner, pending[:group])
        pending = pending[group:]
        while inflight:
            with store.batch():
                following = [store.complete_step(owner, step, found[name_of(step), step.step])
                             for step in inflight]  # fmt: skip
                inflight = [step for step in following if step is not None]
                fresh, pending = pending[: group - len(inflight)], pending[group - len(inflight) :]
                inflight += store.start_steps(owner, fresh) if fresh else []
        elapsed = time.monotonic() - started
        store.release(run.id, owner, RunStatus.DONE, "finished")
    finally:
        store.close()
    return elapsed


def pipeline_writer(db: str, folder: str, work: str, group: int, conn: Connection) -> None:
    """The store in a process of its own: it claims steps, sends them to the step runner,
    and writes down each batch of results that came back in one commit, claiming the
    next steps in it. Steps and their hand-offs to this process are all it does."""
    from durabatch import discovery
    from durabatch.config import Settings
    from durabatch.store import open_store
    from durabatch.store.records import RunStatus, Step, Work

    store = open_store(db)
    settings = Settings(concurrency=group)
    run = store.create_run(settings.run_settings() | {"cwd": work}, [folder])
    inflight: dict[tuple[str, Step], Work] = {}

    def hand(claimed: list[Work]) -> None:
        for step in claimed:
            inflight[name_of(step), step.step] = step
        conn.send([(step.document.source, step.step) for step in claimed])

    conn.recv()  # go
    docs = [doc for doc in discovery.walk([folder], Path(work), include=[], exclude=[],
                                          ignore=[]) if doc is not None]  # fmt: skip
    store.add_documents(run.id, docs)
    store.finish_discovery(run.id)
    owner = store.acquire(run.id, settings.lease_ttl)
    pending = store.pending_documents(run.id, len(docs))
    hand(store.start_steps(owner, pending[:group]))
    pending = pending[group:]
    while inflight:
        results = [conn.recv()]
        while conn.poll():
            results.append(conn.recv())
        with store.batch():
            claimed = [following for name, step, result in results
                       if (following := store.complete_step(owner, inflight.pop((name, step)),
                                                            result)) is not None]  # fmt: skip
            free = group - len(inflight) - len(claimed)
            fresh, pending = pending[:free], pending[free:]
            claimed += store.start_steps(owner, fresh) if fresh else []
        hand(claimed)
    conn.send(None)  # all done
    store.release(run.id, owner, RunStatus.DONE, "finished")
    store.close()


def pipelined(folder: Path, work: Path, group: int, round_: int = 0) -> float:
    """The best this store allows a two-process design: the step functions run here, as
    in the plain loop, and each result goes through a pipe to ``pipeline_writer``, whose
    commits run on the other core, free of this process's GIL. A document's next step
    still starts only once its step is committed, ``group`` documents in flight."""
    import multiprocessing

    from durabatch.artifacts import ArtifactStore
    from durabatch.config import Settings
    from durabatch.models.local import LocalProvider
    from durabatch.sandbox import ParserPool
    from durabatch.steps.context import StepContext
    from durabatch.store.records import Step

    spawn = multiprocessing.get_context("spawn")
    here, there = spawn.Pipe()
    db = work / f"pipeline-{group}-{round_}.db"
    writer = spawn.Process(target=pipeline_writer,
                           args=(str(db), str(folder), str(work), group, there))  # fmt: skip
    writer.start()
    pool = ParserPool()
    context = StepContext(Settings(), LocalProvider(), ArtifactStore(work / f"pa-{round_}"), pool,
                          one_piece)  # fmt: skip
    texts: dict[str, str | None] = {}
    ready: collections.deque[tuple[str, Step]] = collections.deque()
    try:
        here.send("go")
        started = time.monotonic()
        while True:
            while not ready or here.poll():
                claimed = here.recv()
                if claimed is None:
                    elapsed = time.monotonic() - started
                    writer.join()
                    return elapsed
                ready.extend(claimed)
            source, step = ready.popleft()
            path = Path(source)
            result = run_step(context, path, step, texts.get(path.name))
            if step == Step.EXTRACT:
                texts[path.name] = result.text
            here.send((path.name, step, result))
    finally:
        pool.close()
        writer.join(timeout=5)
        writer.kill()


def durable(folder: Path, work: Path, concurrency: int, round_: int = 0) -> float:
    binary = Path(sys.executable).parent / "durabatch"
    db = work / f"bench-{folder.name}-{concurrency}-{round_}.db"  # a fresh one: nothing cached
    argv = [str(binary), "run", str(folder), "--db", str(db), "--concurrency", str(concurrency)]
    # the run's settings from its defaults, as the plain loop's: none from the environment
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DURABATCH_", "OPENAI_"))}
    started = time.monotonic()
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"durabatch run exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def floor(work: Path, commits: int, round_: int = 0) -> float:
    """Seconds per fsynced commit of one small row, as the store commits a step."""
    conn = sqlite3.connect(work / f"floor-{round_}.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE steps (id INTEGER PRIMARY KEY, doc INTEGER, step TEXT, out TEXT)")
    started = time.monotonic()
    for n in range(commits):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO steps (doc, step, out) VALUES (?, ?, ?)", (n, "s", "x" * 200))
        conn.execute("COMMIT")
    elapsed = time.monotonic() - started
    conn.close()
    return elapsed / commits


# Runs `durabatch run` with WAL checkpoints off, so that the WAL keeps every page each
# commit wrote; prints that count. Only this measurement does that: the product never does.
PAGES_SCRIPT = """
import sqlite3, sys
from durabatch.cli import main
from durabatch.store import connection
plain_connect = connection.connect
def connect(path):
    conn = plain_connect(path)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn
connection.connect = connect
import durabatch.store.sqlite as store
store.connect = connect
sys.argv = ["durabatch", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
db = sys.argv[sys.argv.index("--db") + 1]
wal = db + "-wal"  # measured before exit closes it
print("wal-bytes", __import__("os").path.getsize(wal), flush=True)
# which table or index each page written belongs to (SQLite's dbstat), counted once a commit
owner = dict((page, name) for name, page in sqlite3.connect(db).execute(
    "SELECT name, pageno FROM dbstat"))
data = open(wal, "rb").read()
size = int.from_bytes(data[8:12], "big")
pages, seen, at = {}, set(), 32
while at + 24 + size <= len(data):
    seen.add(int.from_bytes(data[at:at + 4], "big"))
    if int.from_bytes(data[at + 4:at + 8], "big"):  # a commit's last frame
        for name in (owner.get(page, "?") for page in seen):
            pages[name] = pages.get(name, 0) + 1
        seen = set()
    at += 24 + size
for name, count in pages.items():
    print("wal-pages", name, count, flush=True)
"""


def pages_per_step(folder: Path, work: Path, docs: int) -> tuple[float, dict[str, float]]:
    """Pages a step's commit writes at concurrency 1: WAL frames over steps, checkpoints off
    (discovery's and the run's own few commits are counted too, so it errs high); and, by
    table and index, the pages of each a step's commit writes (each page once a commit)."""
    db = work / "pages.db"
    argv = [sys.executable, "-c", PAGES_SCRIPT, "run", str(folder), "--db", str(db),
            "--concurrency", "1", "--no-cache"]  # fmt: skip
    done = subprocess.run(argv, cwd=work, capture_output=True, text=True, check=False)
    sizes = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("wal-bytes")]
    if done.returncode != 0 or not sizes:
        sys.exit(f"the pages-per-step run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    (page_size,) = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()
    steps = docs * STEPS_PER_DOC
    where = {line.split()[1]: int(line.split()[2]) / steps
             for line in done.stdout.splitlines() if line.startswith("wal-pages")}  # fmt: skip
    return (int(sizes[0]) - 32) / (page_size + 24) / steps, where


def floor_pages(work: Path, pages: int, commits: int, round_: int = 0) -> float:
    """Seconds per fsynced commit that rewrites ``pages`` pages of a 1,000-page table."""
    conn = sqlite3.connect(work / f"floor-pages-{round_}.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    with conn:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?)", ((i, "x" * 900) for i in range(4000)))
    started = time.monotonic()
    for n in range(commits):
        conn.execute("BEGIN IMMEDIATE")
        for p in range(pages):  # four rows to a page: rows 4 apart are on different pages
            conn.execute("UPDATE t SET v = ? WHERE id = ?", ("y" * 900, (n * 37 + p * 4) % 4000))
        conn.execute("COMMIT")
    elapsed = time.monotonic() - started
    conn.close()
    return elapsed / commits


def cache_compiled(work: Path) -> None:
    """Each process this bench starts from now on reads the modules compiled by the
    warm-up run ``main`` makes next, from a cache in ``work`` (gone with it), as a usual
    install does after its first run. Where PYTHONDONTWRITEBYTECODE is set (it is on the
    machine of the README's figures), an editable install compiles, at every start,
    each module with no compiled copy: in the run and its parser processes, and in the
    plain loop's one parser process only, as the loop imports before its clock starts.
    (This process's own cache settings were fixed when it started; its imports are
    never timed.)"""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "compiled")


def cpu_seconds() -> float:
    """CPU time (user and system) of this process and of its children that have ended
    (a run's parser processes, reaped by the run, count in the run's)."""
    own, ended = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                        resource.RUSAGE_CHILDREN))  # fmt: skip
    return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime


def folder_of(folder: Path, work: Path, count: int) -> Path:
    """The first ``count`` documents of ``folder``, in a folder of their own."""
    sample = work / f"first-{count}"
    sample.mkdir(exist_ok=True)
    for path in sorted(folder.iterdir())[:count]:
        shutil.copy(path, sample / path.name)
    return sample


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """The median, and the range over the rounds."""
    low, mid, high = (round(v * scale, digits) for v in (min(values), median(values), max(values)))
    return f"{mid:8.{digits}f}  ({low:.{digits}f}-{high:.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=5000)
    levels_help = "levels, comma-separated (64: the embedded engine's default)"
    parser.add_argument("--concurrency", default="1,4,64", help=levels_help)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    steps = args.docs * STEPS_PER_DOC
    plain_s: list[float] = []
    calls_s: list[float] = []
    start_s: list[float] = []
    floor_s: list[float] = []
    page_floor_s: list[float] = []
    durable_s: dict[int, list[float]] = {level: [] for level in levels}
    plain_cpu: list[float] = []
    durable_cpu: dict[int, list[float]] = {level: [] for level in levels}
    alone_s: dict[int, list[float]] = {level: [] for level in levels}
    pipe_s: dict[int, list[float]] = {level: [] for level in levels}
    work = Path(tempfile.mkdtemp(prefix="durabatch-overhead-", dir=Path.cwd()))
    cache_compiled(work)
    try:
        folder = work / "docs"
        make_docs(folder, args.docs)
        durable(folder_of(folder, work, 1), work, 1, -1)  # a warm-up: the modules compiled
        (work / "empty").mkdir()
        sample = min(args.docs, 300)
        pages, where = pages_per_step(folder_of(folder, work, sample), work, sample)
        found = answers(folder, work)
        for n in range(args.rounds):  # each round measures everything once, side by side
            before = cpu_seconds()
            plain_s.append(plain(folder, work))
            plain_cpu.append(cpu_seconds() - before)
            calls_s.append(calls_only(folder))
            start_s.append(durable(work / "empty", work, 1, n))
            for level in levels:
                before = cpu_seconds()
                durable_s[level].append(durable(folder, work, level, n))
                durable_cpu[level].append(cpu_seconds() - before)
                alone_s[level].append(store_alone(folder, work, found, level, n))
                pipe_s[level].append(pipelined(folder, work, level, n))
            floor_s.append(floor(work, min(steps, 3000), n))
            page_floor_s.append(floor_pages(work, round(pages), 1000, n))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"documents {args.docs}, steps {steps}; median of {args.rounds} rounds (range)")
    print(f"plain loop:                 {spread(plain_s)} s  (the step functions), CPU "
          f"{spread(plain_cpu).strip()} s (its process and its parser process)")  # fmt: skip
    print(f"the calls alone:            {spread(calls_s)} s  (no step functions around them)")
    print(f"durabatch start-up:         {spread(start_s)} s  (an empty folder)")
    print(f"floor (one fsynced commit): {spread(floor_s, 1e6, 0)} us per step")
    to_one_row = [p / f for p, f in zip(page_floor_s, floor_s, strict=True)]
    print(f"a step's commit writes {pages:.1f} pages (at concurrency 1); one fsynced commit of "
          f"{round(pages)} pages: {spread(page_floor_s, 1e6, 0)} us, "
          f"{spread(to_one_row).strip()} x the floor")  # fmt: skip
    ranked = sorted(where.items(), key=lambda item: -item[1])
    print("  by table and index: " + ", ".join(f"{name} {count:.1f}" for name, count in ranked
                                               if count >= 0.05))  # fmt: skip
    met = True
    for level, runs in durable_s.items():
        rounds = list(zip(runs, plain_s, start_s, floor_s, strict=True))
        ratio = [d / p for d, p, _, _ in rounds]
        steady = [(d - s) / p for d, p, s, _ in rounds]
        per_step = [(d - s - p) / steps for d, p, s, _ in rounds]
        to_floor = [(d - s - p) / steps / f for d, p, s, f in rounds]
        met = met and median(ratio) <= TARGET_RATIO and median(to_floor) <= 2
        print(f"durabatch run, concurrency {level}: {spread(runs)} s")
        print(f"  ratio durable/plain   {spread(ratio)}  (target <= {TARGET_RATIO})")
        print(f"  without the start-up  {spread(steady)}")
        calls = [d / c for d, c in zip(runs, calls_s, strict=True)]
        print(f"  against the calls     {spread(calls)}  (the baseline used before)")
        cpu = [d / p for d, p in zip(durable_cpu[level], plain_cpu, strict=True)]
        print(f"  CPU, durable/plain    {spread(cpu)}  (the run's process and its parsers: "
              "less moved by other work on the machine than wall time)")  # fmt: skip
        print(f"  durability adds       {spread(per_step, 1e6, 0)} us per step")
        print(f"  that is, x the floor  {spread(to_floor)}  (target <= 2)")
        alone = [a / steps for a in alone_s[level]]
        print(f"  of which the store    {spread(alone, 1e6, 0)} us per step, "
              f"{spread([a / f for a, f in zip(alone, floor_s, strict=True)]).strip()} x the "
              f"floor (alone, {level} document{'s' if level > 1 else ''} a commit)")  # fmt: skip
        engine = [(d - s - p) / steps - a for (d, p, s, _), a in zip(rounds, alone, strict=True)]
        print(
            f"  and the engine        {spread(engine, 1e6, 0)} us per step (hand-offs, "
            "waits; below 0: it parses while it records, as the plain loop cannot)"
        )
        best = [b / p for b, p in zip(pipe_s[level], plain_s, strict=True)]
        print(f"  two-process bound     {spread(pipe_s[level])} s, {spread(best).strip()} x the "
              "plain loop (steps here, the store in a process of its own)")  # fmt: skip
    others = [level for level in levels if level > 1]
    if 1 in levels and others:
        record_cost(levels, alone_s, plain_s, steps, others[-1])
    sys.exit(0 if met else 1)


def record_cost(levels: list[int], alone_s: dict[int, list[float]], plain_s: list[float],
                steps: int, k: int) -> None:  # fmt: skip
    """The store alone costs c(g) = a/g + b a step at g documents a commit: ``a`` is paid
    once a commit (BEGIN, COMMIT, the fsync), ``b`` once a step (its statements). From the
    medians at g = 1 and g = k (a difference of two noisy figures: read it as a rough size);
    and what ``b`` means next to a plain step."""
    c1, ck = median(alone_s[1]) / steps, median(alone_s[k]) / steps
    fixed = (c1 - ck) * k / (k - 1)
    each = c1 - fixed
    share = each / (median(plain_s) / steps)
    print(f"the store's record (from the medians of the store alone at 1 and {k} documents a "
          f"commit): {fixed * 1e6:.0f} us a commit, plus {each * 1e6:.0f} us a step")  # fmt: skip
    print(f"  a step's own part is {share:.2f} x a plain step, paid on the core that runs the "
          f"embedded engine's steps, however many steps a commit carries (target: the whole "
          f"run within {TARGET_RATIO} x)")  # fmt: skip


if __name__ == "__main__":
    main()
