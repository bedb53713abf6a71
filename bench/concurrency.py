"""Throughput of `durabatch run --provider openai` against a slow model, by concurrency.

    .venv/bin/python bench/concurrency.py [--levels 1,4,16,32,64] [--latency 0.2]

Every model call takes ``--latency`` seconds on a local fake server, so the run is bound by
waiting, not by CPU: at concurrency c the ideal is c / latency calls per second. For each
level, 20 documents per slot are run side by side on one server; the rate is measured from
the server's own log (first request to last answer), and the CPU the process used from
its rusage. Exits 1 when a level up to 32 reaches less than 80% of the ideal, or any level
uses 2 cores or more.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fakeapi import FakeAPI  # noqa: E402

MODEL = "gpt-5.4-mini"
TARGET_SHARE = 0.8  # of the ideal throughput, concurrency / latency
MAX_CORES = 2.0


def durabatch_bin() -> str:
    beside = Path(sys.executable).parent / "durabatch"
    found = str(beside) if beside.exists() else shutil.which("durabatch")
    if not found:
        sys.exit("the durabatch console script is not installed")
    return found


def make_docs(folder: Path, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        text = (
            f"DOC-{i} Note {i} from the harbour office. Alice Morgan met the board of "
            f"Northwind Trading in Rotterdam on {i % 28 + 1} May 2025 to agree a budget "
            f"of ${(i + 1) * 1000:,} for the depot works.\n"
        )
        (folder / f"doc_{i:04d}.txt").write_text(text, encoding="utf-8")


def timed_run(work: Path, docs: Path, url: str, concurrency: int) -> tuple[float, float]:
    """(start, wall seconds) of one `durabatch run`; it must exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DURABATCH_", "OPENAI_"))}
    env["DURABATCH_API_KEY"] = "test-key"
    db = work / f"c{concurrency}.db"
    argv = [
        durabatch_bin(), "run", str(docs), "--provider", "openai", "--base-url", url,
        "--model", MODEL, "--concurrency", str(concurrency), "--db", str(db),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"concurrency {concurrency}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return started, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--per-slot", type=int, default=20,
                        help="documents per unit of concurrency (20)")  # fmt: skip
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per call (0.2)")
    parser.add_argument("--levels", default="1,4,16,32,64", help="concurrencies to measure")
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.levels.split(",")]

    failed = False
    with tempfile.TemporaryDirectory(prefix="durabatch-bench-") as tmp, FakeAPI(
        latency=args.latency
    ) as api:  # fmt: skip
        work = Path(tmp)
        for concurrency in levels:
            docs = work / f"docs{concurrency}"
            make_docs(docs, max(40, args.per_slot * concurrency))
            before = len(api.completions())
            cpu_before = _children_cpu()
            _, wall = timed_run(work, docs, api.base_url, concurrency)
            cores = (_children_cpu() - cpu_before) / wall
            calls = api.completions()[before:]
            span = max(r["time"] for r in calls) - min(r["time"] for r in calls) + args.latency
            rate = len(calls) / span
            ideal = concurrency / args.latency
            share = rate / ideal
            ok = (share >= TARGET_SHARE or concurrency > 32) and cores < MAX_CORES
            failed |= not ok
            print(
                f"concurrency {concurrency:>2}: {rate:7.1f} calls/s of {ideal:6.1f} ideal "
                f"({share:4.0%}), {len(calls)} calls, {wall:6.1f} s wall, "
                f"{cores:.2f} cores{'' if ok else '  <- below target'}"
            )
    print(f"target: at least {TARGET_SHARE:.0%} of ideal up to 32, under {MAX_CORES} cores")
    return 1 if failed else 0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())
