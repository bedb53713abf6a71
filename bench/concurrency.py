"""Wall time of `durabatch run --provider openai` at concurrency 1 and 16 against a slow model.

    .venv/bin/python bench/concurrency.py [--docs 200] [--latency 0.2]

Every model call takes ``--latency`` seconds on a local fake server, so the run is bound by
waiting, not by CPU: 16 documents in flight should take well under a tenth of the time of
one. Exits 1 when the ratio c16/c1 is not below 0.1 (or a run does not exit 0).
"""

from __future__ import annotations

import argparse
import os
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
TARGET_RATIO = 0.1


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
    parser.add_argument("--docs", type=int, default=200, help="documents to process (200)")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per call (0.2)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="durabatch-bench-") as tmp, FakeAPI(
        latency=args.latency
    ) as api:  # fmt: skip
        work = Path(tmp)
        make_docs(work / "docs", args.docs)
        times = {}
        for concurrency in (1, 16):
            before = len(api.completions())
            started, times[concurrency] = timed_run(work, work / "docs", api.base_url, concurrency)
            calls = api.completions()[before:]
            first = min(r["time"] for r in calls) - started if calls else float("nan")
            print(
                f"concurrency {concurrency:>2}: {times[concurrency]:7.2f} s  ({len(calls)} calls,"
                f" first call after {first:.2f} s)"
            )

    ratio = times[16] / times[1]
    ideal = args.docs * 2 * args.latency
    print(f"ideal serial: {ideal:7.2f} s  ({args.docs} docs x 2 calls x {args.latency} s)")
    print(f"ratio c16/c1: {ratio:.3f}  (target < {TARGET_RATIO})")
    if ratio >= TARGET_RATIO:
        print("FAIL: concurrency 16 is not at least 10x faster than concurrency 1")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
