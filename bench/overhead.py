"""What durability costs: `durabatch run` vs the same work in a plain loop, and the floor.

    .venv/bin/python bench/overhead.py [--docs 5000] [--concurrency 1,4]

Side by side, in one run, on the same disk:
- plain: each document parsed by the same parser worker pool, then summarized and its
  entities found by the embedded engine, in a loop that keeps nothing (its own imports
  are done before the clock starts; the parser process starts inside it, as in a run);
- start-up: `durabatch run` over an empty folder: imports and a new database, paid
  once per run whatever its size (no parser process: it starts with the first document);
- durable: `durabatch run` over the same folder (local engine, synchronous=FULL) at each
  concurrency;
- floor: one fsynced SQLite commit (WAL, synchronous=FULL) per step, nothing else.
Prints the ratio durable / plain (target <= 1.15), also without the start-up, and what
durability adds per step next to the floor (target within 2x). Concurrency 1 is the
like-for-like figure: above it the run also works on several documents at once (parser
processes, model threads), which the plain loop does not, so the ratio there mixes
durability's cost with that gain.
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


def durable(folder: Path, work: Path, concurrency: int) -> float:
    binary = Path(sys.executable).parent / "durabatch"
    db = work / f"bench-{folder.name}-{concurrency}.db"
    argv = [str(binary), "run", str(folder), "--db", str(db), "--concurrency", str(concurrency)]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=work, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"durabatch run exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def floor(work: Path, commits: int) -> float:
    """Seconds per fsynced commit of one small row, as the store commits a step."""
    conn = sqlite3.connect(work / "floor.db", isolation_level=None)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--concurrency", default="1,4", help="levels, comma-separated")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="durabatch-overhead-", dir=Path.cwd()))
    try:
        folder = work / "docs"
        make_docs(folder, args.docs)
        (work / "empty").mkdir()
        plain_s = plain(folder)
        start_s = min(durable(work / "empty", work, level) for level in (1, 2, 3))
        durable_s = {level: durable(folder, work, level) for level in levels}
        per_commit = floor(work, min(args.docs * STEPS_PER_DOC, 3000))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    steps = args.docs * STEPS_PER_DOC
    print(f"documents {args.docs}, steps {steps}")
    print(f"plain loop:                 {plain_s:8.2f} s")
    print(f"durabatch start-up:         {start_s:8.2f} s  (an empty folder)")
    print(f"floor (one fsynced commit): {per_commit * 1e6:8.0f} us per step")
    met = True
    for level, seconds in durable_s.items():
        ratio, steady = seconds / plain_s, (seconds - start_s) / plain_s
        per_step = (seconds - start_s - plain_s) / steps
        met = met and ratio <= TARGET_RATIO
        print(f"durabatch run, concurrency {level}: {seconds:8.2f} s")
        print(f"  ratio durable/plain {ratio:.2f}, without start-up {steady:.2f}  "
              f"(target <= {TARGET_RATIO})")  # fmt: skip
        print(f"  durability adds {per_step * 1e6:6.0f} us per step: "
              f"{per_step / per_commit:.2f}x the floor (target <= 2)")  # fmt: skip
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
