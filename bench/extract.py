"""PDF extraction throughput: pages per second with 1 and 2 parser processes.

    .venv/bin/python bench/extract.py [--files 40] [--pages 20]

pypdf is pure Python, so extraction is CPU-bound: durabatch parses in worker
processes, and two of them should use two cores. Side by side on the same
generated PDFs: the parser pool with one worker, the pool with two, and (when
installed: `pip install pypdfium2`) PDFium through pypdfium2 in one process, to see
whether another extractor would be worth offering.
"""

from __future__ import annotations

import argparse
import shutil
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


def make_pdfs(folder: Path, files: int, pages: int) -> None:
    folder.mkdir()
    for n in range(files):
        body = [f"Report {n}, page {p}. " + SENTENCE * 12 for p in range(pages)]
        (folder / f"report_{n:03d}.pdf").write_bytes(text_pdf(*body))


def with_pool(paths: list[Path], workers: int) -> tuple[float, int]:
    pool = ParserPool(size=workers)

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
    return elapsed, sum(d.pages or 0 for d in done)


def with_pdfium(paths: list[Path]) -> tuple[float, int] | None:
    try:
        import pypdfium2  # type: ignore[import-not-found]
    except ImportError:
        return None
    started = time.monotonic()
    pages = 0
    for path in paths:
        document = pypdfium2.PdfDocument(str(path))
        for page in document:
            page.get_textpage().get_text_range()
            pages += 1
        document.close()
    return time.monotonic() - started, pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--pages", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="durabatch-extract-"))
    try:
        make_pdfs(work / "pdfs", args.files, args.pages)
        paths = sorted((work / "pdfs").iterdir())
        one = with_pool(paths, 1)
        two = with_pool(paths, 2)
        pdfium = with_pdfium(paths)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rate_one, rate_two = one[1] / one[0], two[1] / two[0]
    print(f"{args.files} PDFs x {args.pages} pages")
    print(f"pypdf, 1 worker process:  {rate_one:8.1f} pages/s")
    print(f"pypdf, 2 worker processes: {rate_two:8.1f} pages/s  (x{rate_two / rate_one:.2f})")
    if pdfium is None:
        print("pypdfium2 is not installed: `pip install pypdfium2` to compare")
    else:
        rate = pdfium[1] / pdfium[0]
        print(f"pypdfium2, 1 process:      {rate:8.1f} pages/s  (x{rate / rate_one:.1f} of pypdf)")


if __name__ == "__main__":
    main()
