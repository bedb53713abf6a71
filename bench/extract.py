"""PDF extraction throughput: pages per second, pypdf against PDFium, 1 and 2 processes.

    .venv/bin/python bench/extract.py [--files 40] [--pages 20] [--no-run]

pypdf is pure Python, so extraction is CPU-bound: durabatch parses in worker
processes, and two of them should use two cores. Side by side on the same
generated PDFs, through the parser pool that a run uses: pypdf with one worker
and with two, then PDFium (``--pdf-engine pdfium``, pypdfium2) with one and two.
Then, unless ``--no-run``, the whole pipeline: ``durabatch run`` over the folder
with each engine and the local model, each in a fresh database (nothing cached).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fixtures_docs import text_pdf  # noqa: E402

from durabatch.formats import Extracted  # noqa: E402
from durabatch.sandbox import ParserPool  # noqa: E402

SENTENCE = (
    "The harbour board met in Rotterdam to agree the budget for the depot works, "
    "and asked the auditors for a report on the tender before the end of June. "
)
ENGINES = ("pypdf", "pdfium")


def make_pdfs(folder: Path, files: int, pages: int) -> None:
    folder.mkdir()
    for n in range(files):
        body = [f"Report {n}, page {p}. " + SENTENCE * 12 for p in range(pages)]
        (folder / f"report_{n:03d}.pdf").write_bytes(text_pdf(*body))


def with_pool(paths: list[Path], workers: int, engine: str) -> float:
    """Pages per second through a warm parser pool."""
    pool = ParserPool(size=workers, pdf_engine=engine)

    def parse(path: Path) -> Extracted:
        return pool.extract(path, max_bytes=1 << 30, timeout=120)

    try:
        with ThreadPoolExecutor(workers) as threads:
            list(threads.map(parse, paths[:workers]))  # every worker started and warm
            started = time.monotonic()
            done = list(threads.map(parse, paths))
            elapsed = time.monotonic() - started
    finally:
        pool.close()
    return sum(d.pages or 0 for d in done) / elapsed


def with_run(folder: Path, engine: str, pages: int) -> float:
    """Pages per second of a whole `durabatch run` (extract, summarize, entities; local model),
    Python start-up included."""
    db = folder.parent / f"run-{engine}.db"
    command = [sys.executable, "-c", "from durabatch.cli import main; main()", "run",
               str(folder), "--db", str(db), "--pdf-engine", engine]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DURABATCH_", "OPENAI_"))}
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=folder.parent)
    return pages / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--no-run", action="store_true", help="skip the durabatch run timings")
    args = parser.parse_args()
    try:
        import pypdfium2  # noqa: F401
    except ImportError:
        sys.exit("pypdfium2 is not installed: pip install 'durabatch[pdfium]' to compare")
    work = Path(tempfile.mkdtemp(prefix="durabatch-extract-"))
    try:
        make_pdfs(work / "pdfs", args.files, args.pages)
        paths = sorted((work / "pdfs").iterdir())
        rates = {(e, n): with_pool(paths, n, e) for e in ENGINES for n in (1, 2)}
        total = args.files * args.pages
        runs = {} if args.no_run else {e: with_run(work / "pdfs", e, total) for e in ENGINES}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, rates, runs)


def report(args: argparse.Namespace, rates: dict[tuple[str, int], float],
           runs: dict[str, float]) -> None:  # fmt: skip
    print(f"{args.files} PDFs x {args.pages} pages, {os.cpu_count()} cores")
    print("extraction through the parser pool, pages per second:")
    for engine, workers in rates:
        rate = rates[engine, workers]
        ratios = [f"x{rate / rates[engine, 1]:.2f} of 1 worker"] if workers > 1 else []
        if engine != "pypdf":
            ratios.append(f"x{rate / rates['pypdf', workers]:.2f} of pypdf")
        plural = "s" if workers > 1 else " "
        print(f"  {engine + ',':<7} {workers} worker{plural} {rate:7.0f}", end="")
        print(f"  ({', '.join(ratios)})" if ratios else "")
    if runs:
        print("durabatch run, local model (extract, summarize, entities), pages per second:")
        for engine, rate in runs.items():
            ratio = f"  (x{rate / runs['pypdf']:.2f} of pypdf)" if engine != "pypdf" else ""
            print(f"  {engine + ':':<18} {rate:7.0f}{ratio}")


if __name__ == "__main__":
    main()
