"""What durability costs: `durabatch run` vs the same work in a plain loop, and the floor.

    .venv/bin/python bench/overhead.py [--docs 5000] [--concurrency 1,4] [--rounds 3]

Side by side, in one run, on the same disk:
- plain: each document parsed by the same parser worker pool, then summarized and its
  entities found by the embedded engine, in a loop that keeps nothing (its own imports
  are done before the clock starts; the parser process starts inside it, as in a run);
- start-up: `durabatch run` over an empty folder: imports and a new database, paid
  once per run whatever its size (no parser process: it starts with the first document);
- durable: `durabatch run` over the same folder (local engine, synchronous=FULL) at each
  concurrency;
- floor: one fsynced SQLite commit (WAL, synchronous=FULL) per step, nothing else: a
  one-row insert into a growing table, as a run's tables grow;
- the pages a step's commit writes (a 300-document run at concurrency 1 with WAL
  checkpoints switched off for that measurement, WAL frames over steps) and one fsynced
  commit rewriting that many pages of an existing table, next to the floor: what the
  size of a step's record costs on this disk.
Prints the ratio durable / plain (target <= 1.15), also without the start-up, and what
durability adds per step next to the floor (target within 2x). Concurrency 1 is the
like-for-like figure: above it the run also works on several documents at once (parser
processes, model threads), which the plain loop does not, so the ratio there mixes
durability's cost with that gain. Everything is measured ``--rounds`` times, interleaved
(each round runs each thing once; each durable run gets a fresh database), and the
medians are printed with their range: on a shared machine one run can move by a third.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

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


def plain(folder: Path) -> float:
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


def durable(folder: Path, work: Path, concurrency: int, round_: int = 0) -> float:
    binary = Path(sys.executable).parent / "durabatch"
    db = work / f"bench-{folder.name}-{concurrency}-{round_}.db"  # a fresh one: nothing cached
    argv = [str(binary), "run", str(folder), "--db", str(db), "--concurrency", str(concurrency)]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=work, capture_output=True, text=True, check=False)
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
wal = sys.argv[sys.argv.index("--db") + 1] + "-wal"  # measured before exit closes it
print("wal-bytes", __import__("os").path.getsize(wal), flush=True)
"""


def pages_per_step(folder: Path, work: Path, docs: int) -> float:
    """Pages a step's commit writes at concurrency 1: WAL frames over steps, checkpoints off
    (discovery's and the run's own few commits are counted too, so it errs high)."""
    db = work / "pages.db"
    argv = [sys.executable, "-c", PAGES_SCRIPT, "run", str(folder), "--db", str(db),
            "--concurrency", "1", "--no-cache"]  # fmt: skip
    done = subprocess.run(argv, cwd=work, capture_output=True, text=True, check=False)
    sizes = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("wal-bytes")]
    if done.returncode != 0 or not sizes:
        sys.exit(f"the pages-per-step run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    (page_size,) = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()
    return (int(sizes[0]) - 32) / (page_size + 24) / (docs * STEPS_PER_DOC)


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


def folder_of(folder: Path, work: Path, count: int) -> Path:
    """The first ``count`` documents of ``folder``, in a folder of their own."""
    sample = work / f"first-{count}"
    sample.mkdir()
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
    parser.add_argument("--concurrency", default="1,4", help="levels, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    steps = args.docs * STEPS_PER_DOC
    plain_s: list[float] = []
    start_s: list[float] = []
    floor_s: list[float] = []
    page_floor_s: list[float] = []
    durable_s: dict[int, list[float]] = {level: [] for level in levels}
    work = Path(tempfile.mkdtemp(prefix="durabatch-overhead-", dir=Path.cwd()))
    try:
        folder = work / "docs"
        make_docs(folder, args.docs)
        (work / "empty").mkdir()
        sample = min(args.docs, 300)
        pages = pages_per_step(folder_of(folder, work, sample), work, sample)
        for n in range(args.rounds):  # each round measures everything once, side by side
            plain_s.append(plain(folder))
            start_s.append(durable(work / "empty", work, 1, n))
            for level in levels:
                durable_s[level].append(durable(folder, work, level, n))
            floor_s.append(floor(work, min(steps, 3000), n))
            page_floor_s.append(floor_pages(work, round(pages), 1000, n))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"documents {args.docs}, steps {steps}; median of {args.rounds} rounds (range)")
    print(f"plain loop:                 {spread(plain_s)} s")
    print(f"durabatch start-up:         {spread(start_s)} s  (an empty folder)")
    print(f"floor (one fsynced commit): {spread(floor_s, 1e6, 0)} us per step")
    to_one_row = [p / f for p, f in zip(page_floor_s, floor_s, strict=True)]
    print(f"a step's commit writes {pages:.1f} pages (at concurrency 1); one fsynced commit of "
          f"{round(pages)} pages: {spread(page_floor_s, 1e6, 0)} us, "
          f"{spread(to_one_row).strip()} x the floor")  # fmt: skip
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
        print(f"  durability adds       {spread(per_step, 1e6, 0)} us per step")
        print(f"  that is, x the floor  {spread(to_floor)}  (target <= 2)")
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
