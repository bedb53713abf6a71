"""A run of 100,000 tiny documents next to one of 1,000: start-up, resume, status, memory, size.

    .venv/bin/python bench/scale.py [--docs 100000] [--small 1000] [--concurrency 4]

The same steps are run at both sizes, one after the other in one invocation, and each
figure is printed for both with their ratio and the target:

1. ``durabatch run FOLDER`` over generated tiny files (one flat folder: the hardest case
   for the walk). Time to the first step is measured from the spawn to the moment a
   read-only look at the database sees the first ``step_started`` event (polled every
   10 ms). Once ``discovery_finished`` and a first ``document_finished`` appeared, the run
   gets SIGTERM and drains (exit 75).
2. 99% done: the bench marks the first 99% of the documents that are not finished as
   done by copying, for each, the rows and the events that one really processed
   document left (its steps, model calls, and its step_started / step_completed /
   document_finished events). The tables and events then have the size and shape of a
   run that did the work, without the 300,000 real steps (15 minutes and more here).
3. ``durabatch status RUN`` (median of 3 wall times, Python start-up included; the bare
   start-up, ``import durabatch.cli``, is printed beside it).
4. ``durabatch resume RUN`` to the end: time to its first new step, as in 1.
5. Peak RSS of the run and resume processes (their own rusage from wait4), the database
   size per document, and the size after ``durabatch compact RUN --vacuum``, then
   ``durabatch verify RUN`` must still pass.

Before all that, a warm-up run of one document fills a cache of compiled modules in the
work folder, which every process started after it reads (as a usual install does after
its first run, even where PYTHONDONTWRITEBYTECODE is set).

``--source DIR`` runs the durabatch package found in DIR instead (e.g. an older commit
unpacked with ``git archive``), for before/after figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POLL = 0.01
TARGETS = {
    "first_step_s": 5.0,
    "resume_first_step_s": 1.0,
    "status_s": 0.5,
    "peak_ratio": 1.5,
}
CLONED = ("step_started", "step_completed", "document_finished")


@dataclass
class Figures:
    docs: int
    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Durabatch:
    def __init__(self, work: Path, source: str | None, concurrency: int) -> None:
        self.work = work
        self.concurrency = concurrency
        # modules compiled by the warm-up run read from a cache in the work folder, as a
        # usual install does after its first run, even where PYTHONDONTWRITEBYTECODE is set
        # (it is on the machine of the README's figures: each start of an editable install
        # would compile every module with no compiled copy, in `status` as in the run)
        left_out = ("DURABATCH_", "OPENAI_", "PYTHONDONTWRITEBYTECODE")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(left_out)}
        self.env["PYTHONPYCACHEPREFIX"] = str(work / "compiled")
        if source:
            self.env["PYTHONPATH"] = str(Path(source).resolve())

    def warm_up(self) -> None:
        """A run of one document (a parser process starts too), its modules compiled."""
        folder = self.work / "warm-up"
        folder.mkdir()
        (folder / "one.txt").write_text("Alice Morgan met the board in Rotterdam.\n")
        _, done = self.run("run", str(folder), "--db", str(self.work / "warm-up.db"))
        if done.returncode != 0:
            sys.exit(f"the warm-up run exited {done.returncode}:\n{done.stderr[-2000:]}")

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-c", "from durabatch.cli import main; main()", *args]

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.work / f"{name}.log").open("wb")
        return subprocess.Popen(self.argv(*args), cwd=self.work, env=self.env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)  # fmt: skip

    def run(self, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.monotonic()
        done = subprocess.run(self.argv(*args), cwd=self.work, env=self.env,
                              capture_output=True, text=True, check=False)  # fmt: skip
        return time.monotonic() - started, done


def make_docs(folder: Path, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        (folder / f"d{i:06d}.txt").write_text(
            f"Note {i}. Alice Morgan met Northwind Trading in Rotterdam on {i % 28 + 1} May "
            f"2025 about a budget of ${(i + 1) * 10:,}.\n"
        )


def reader(db: Path) -> sqlite3.Connection | None:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        conn.execute("SELECT 1 FROM events LIMIT 1")
        return conn
    except sqlite3.DatabaseError:
        return None


def wait_for(proc: subprocess.Popen[bytes], db: Path, kind: str, after: int,
             started: float) -> float | None:  # fmt: skip
    """Seconds from ``started`` until an event ``kind`` with seq > ``after`` is seen."""
    conn = None
    while proc.poll() is None:
        conn = conn or reader(db)
        if conn is not None:
            try:
                # one statement, one snapshot: nothing slips between "found" and "seen up to"
                last, found = conn.execute(
                    "SELECT MAX(seq), MIN(CASE WHEN type = ? THEN seq END) FROM events"
                    " WHERE seq > ?",
                    (kind, after),
                ).fetchone()
            except sqlite3.DatabaseError:
                last = found = None
            if found is not None:
                conn.close()
                return time.monotonic() - started
            after = last or after  # only what is new is looked at next time
        time.sleep(POLL)
    return None


def first_seen(proc: subprocess.Popen[bytes], db: Path, kinds: tuple[str, ...],
               started: float) -> dict[str, float]:  # fmt: skip
    """Seconds from ``started`` until the first event of each kind, watched together (one
    kind seen late does not delay the others); NaN for a kind never seen."""
    seen: dict[str, float] = {}
    conn, after = None, 0
    while proc.poll() is None and len(seen) < len(kinds):
        conn = conn or reader(db)
        if conn is not None:
            try:
                rows = conn.execute(
                    "SELECT type, MAX(seq) FROM events WHERE seq > ? GROUP BY type", (after,)
                ).fetchall()
            except sqlite3.DatabaseError:
                rows = []
            now = time.monotonic() - started
            for kind, last in rows:
                after = max(after, last)
                if kind in kinds:
                    seen.setdefault(kind, now)
        time.sleep(POLL)
    if conn is not None:
        conn.close()
    return {kind: seen.get(kind, float("nan")) for kind in kinds}


def peak_mb(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Exit code and peak resident memory (MB) of a child, from its own rusage."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def max_seq(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])


def fast_forward(db: Path, run_id: str, share: float) -> int:
    """Mark ``share`` of the documents done by copying a processed one's rows and events."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    template = conn.execute(
        "SELECT id, sha256 FROM documents WHERE run_id = ? AND status = 'done' LIMIT 1",
        (run_id,),
    ).fetchone()
    if template is None:
        sys.exit("no document was processed while the run discovered: nothing to copy")
    total, finished = conn.execute(
        "SELECT COUNT(*), SUM(status IN ('done', 'failed', 'skipped')) FROM documents"
        " WHERE run_id = ?", (run_id,),
    ).fetchone()  # fmt: skip
    wanted = max(0, int(total * share) - finished)
    conn.execute("CREATE TEMP TABLE targets (id INTEGER PRIMARY KEY)")
    conn.execute(
        "INSERT INTO targets SELECT id FROM documents WHERE run_id = ? AND status = 'pending'"
        " AND step = 'extract' AND id NOT IN (SELECT doc_id FROM steps) ORDER BY seq LIMIT ?",
        (run_id, wanted),
    )
    for table in ("steps", "model_calls"):
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")
                   if r[1] not in ("doc_id", "id")]  # fmt: skip
        names = ", ".join(columns)
        picked = ", ".join(f"x.{c}" for c in columns)
        conn.execute(
            f"INSERT INTO {table} (doc_id, {names}) SELECT t.id, {picked} FROM targets t,"
            f" {table} x WHERE x.doc_id = ? ORDER BY t.id",
            (template[0],),
        )
    marks = ", ".join("?" for _ in CLONED)
    conn.execute(
        "INSERT INTO events (run_id, at, type, doc_id, step, data) SELECT e.run_id, e.at,"
        f" e.type, t.id, e.step, e.data FROM targets t, events e WHERE e.doc_id = ?"
        f" AND e.type IN ({marks}) ORDER BY t.id, e.seq",
        (template[0], *CLONED),
    )
    conn.execute(
        "UPDATE documents SET status = 'done', step = NULL, sha256 = ? WHERE id IN"
        " (SELECT id FROM targets)",
        (template[1],),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return wanted


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def measure(size: int, work: Path, tool: Durabatch) -> Figures:
    figures = Figures(size)
    v = figures.values
    folder = work / f"docs{size}"
    db = work / f"d{size}.db"
    make_docs(folder, size)
    # 1. run: first step, discovery, then drain
    started = time.monotonic()
    proc = tool.spawn(f"run{size}", "run", str(folder), "--db", str(db),
                      "--concurrency", str(tool.concurrency))  # fmt: skip
    kinds = ("step_started", "step_completed", "discovery_finished")
    seen = first_seen(proc, db, kinds, started)
    v["first_step_s"], v["first_commit_s"], v["discovered_s"] = (seen[k] for k in kinds)
    wait_for(proc, db, "document_finished", 0, started)  # one to copy in step 2
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    code, v["run_peak_mb"] = peak_mb(proc)
    if code not in (0, 75):
        sys.exit(f"run exited {code}: see {work}/run{size}.log")
    with sqlite3.connect(db) as conn:
        run_id = conn.execute("SELECT id FROM runs").fetchone()[0]
    v["discovered_bytes_per_doc"] = db_bytes(db) / size
    # 2. 99% done
    fast_forward(db, run_id, 0.99)
    # 3. status
    times = []
    for _ in range(3):
        elapsed, done = tool.run("status", run_id, "--db", str(db))
        if done.returncode != 0:
            sys.exit(f"status exited {done.returncode}: {done.stderr[-2000:]}")
        times.append(elapsed)
    v["status_s"] = statistics.median(times)
    # 4. resume to the end
    before = max_seq(db)
    started = time.monotonic()
    proc = tool.spawn(f"resume{size}", "resume", run_id, "--db", str(db),
                      "--concurrency", str(tool.concurrency))  # fmt: skip
    v["resume_first_step_s"] = wait_for(proc, db, "step_started", before, started) or float("nan")
    code, v["resume_peak_mb"] = peak_mb(proc)
    v["resume_total_s"] = time.monotonic() - started
    if code not in (0, 1):
        sys.exit(f"resume exited {code}: see {work}/resume{size}.log")
    # 5. size, compaction, verify
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (events,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    v["events"] = events
    v["bytes_per_doc"] = db_bytes(db) / size
    elapsed, done = tool.run("compact", run_id, "--vacuum", "--db", str(db))
    if done.returncode != 0:
        figures.notes.append(f"compact exited {done.returncode}: {done.stderr.strip()[-300:]}")
        return figures
    v["compact_s"] = elapsed
    v["compacted_bytes_per_doc"] = db_bytes(db) / size
    elapsed, done = tool.run("verify", run_id, "--db", str(db))
    v["verify_s"] = elapsed
    if done.returncode != 0:
        figures.notes.append(f"verify after compact FAILED: {done.stdout[-500:]}")
    return figures


def startup(tool: Durabatch) -> float:
    times = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import durabatch.cli"], env=tool.env, check=True)
        times.append(time.monotonic() - started)
    return statistics.median(times)


ROWS: list[tuple[str, str, str, Any]] = [
    # key, label, unit, target (against the large figure, or the ratio for memory)
    ("first_step_s", "run: first step started after", "s", TARGETS["first_step_s"]),
    ("first_commit_s", "run: first step completed after", "s", None),
    ("discovered_s", "run: discovery finished after", "s", None),
    ("status_s", "status RUN (99% done), wall", "s", TARGETS["status_s"]),
    ("resume_first_step_s", "resume (99% done): first new step after", "s",
     TARGETS["resume_first_step_s"]),
    ("resume_total_s", "resume (99% done): to the end", "s", None),
    ("run_peak_mb", "run: peak RSS", "MB", None),
    ("resume_peak_mb", "resume: peak RSS", "MB", None),
    ("discovered_bytes_per_doc", "database per document, discovered", "B", None),
    ("events", "events (99% done + resumed)", "", None),
    ("bytes_per_doc", "database per document, 99% done + resumed", "B", None),
    ("compacted_bytes_per_doc", "... after compact --vacuum", "B", None),
    ("compact_s", "compact --vacuum, wall", "s", None),
    ("verify_s", "verify after compact, wall", "s", None),
]  # fmt: skip


def report(small: Figures, large: Figures, floor: float) -> bool:
    ok = True
    print(f"{'':44} {small.docs:>12,} {large.docs:>12,}   ratio  target")
    for key, label, unit, target in ROWS:
        a, b = small.values.get(key, float("nan")), large.values.get(key, float("nan"))
        ratio = b / a if a else float("nan")
        goal = ""
        if target is not None:
            met = b <= target
            ok &= met
            goal = f"<= {target:g} {unit} at {large.docs:,}" + ("" if met else "  <- MISSED")
        print(f"{label + (' (' + unit + ')' if unit else ''):44} {a:12,.2f} {b:12,.2f} "
              f"{ratio:7.2f}  {goal}")  # fmt: skip
    peak = max(large.values.get("run_peak_mb", 0), large.values.get("resume_peak_mb", 0))
    base = max(small.values.get("run_peak_mb", 0), small.values.get("resume_peak_mb", 0))
    peak_ratio = peak / base if base else float("nan")
    met = peak_ratio <= TARGETS["peak_ratio"]
    ok &= met
    missed = "" if met else "  <- MISSED"
    print(f"peak RSS {large.docs:,} / {small.docs:,}: {peak:.0f} / {base:.0f} MB = "
          f"{peak_ratio:.2f}  (target <= {TARGETS['peak_ratio']:g}){missed}")  # fmt: skip
    print(f"python start-up with `import durabatch.cli` alone: {floor:.2f} s")
    for figures in (small, large):
        for note in figures.notes:
            ok = False
            print(f"{figures.docs:,}: {note}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--source", help="run the durabatch package found in this folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="durabatch-scale-", dir=Path.cwd()))
    tool = Durabatch(work, args.source, args.concurrency)
    try:
        tool.warm_up()
        small = measure(args.small, work, tool)
        large = measure(args.docs, work, tool)
        floor = startup(tool)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    return 0 if report(small, large, floor) else 1


if __name__ == "__main__":
    sys.exit(main())
