"""Fuzzing the extractors with hypothesis, for a bounded time in every ``pytest`` run.

``extract_text`` gets mutated small real documents of each kind (byte flips, cuts,
repeats, splices, tokens each parser cares about; for DOCX, mutations of the XML inside
a valid zip) and raw random bytes. The only allowed outcomes are ``Extracted`` with
non-empty, normalised text, ``DocumentError`` or ``DocumentSkipped``: any other exception
is a crash that would have cost a worker a traceback.

Then a few mutated PDFs and a page that takes seconds to parse go through the real
``ParserPool`` with a short deadline: every call must come back within the deadline plus
a slack of seconds (the machine is shared), never later.

The example counts are sized for about half a minute on two cores. Raise them with
``DURABATCH_FUZZ_EXAMPLES`` (examples per test; default 80), e.g.
``DURABATCH_FUZZ_EXAMPLES=2000 pytest -m fuzz``.
"""

from __future__ import annotations

import io
import os
import random
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from crashkit import slow_html
from fixtures_docs import docx_file, encrypted_pdf, image_pdf, text_pdf
from fpdf import FPDF
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from durabatch.errors import DocumentError, Reason
from durabatch.formats import Extracted, extract_text
from durabatch.formats.text import normalize
from durabatch.sandbox import ParserPool

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("DURABATCH_FUZZ_EXAMPLES", "80"))
MAX_BYTES = 10_000_000
DEADLINE = 2.0  # seconds a pool parse may take before it is stopped
SLACK = 8.0  # seconds on top of the deadline: a shared 2-core machine stalls
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # the same examples on every machine: no local example store
    derandomize=EXAMPLES <= 100,  # CI is reproducible; a long local run explores
    # the environment-cleaning autouse fixture holds nothing an example could change
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

TEXT = "Margaret Ellison of Harbourline met the Riverton council on 3 March 2025.\n\n" * 3
TOKENS = (
    *(b"\x00", b"\xff", b"\xfe\xff", b"\xef\xbb\xbf", b"\r", b"\x0c", b"\xe2\x80\xa8"),
    *(b"<<", b">>", b"/Prev 0", b"xref", b" 0 obj", b"endobj", b"stream\n", b"endstream"),
    *(b"/Length 99999999", b"/Kids [1 0 R]", b"/Encrypt 1 0 R", b"trailer", b"%%EOF"),
    *(b"<div>", b"</p>", b"<!--", b"<script>", b"<meta charset=utf-16>", b"&#0;", b"&#x110000;"),
    *(b"> ", b"- ", b"```", b"[", b"](", b"|---|", b"<w:p>", b"</w:t>", b"PK\x03\x04"),
)


def _plain_pdf(text: str) -> bytes:
    """Uncompressed, so that byte mutations reach the content streams too."""
    pdf = FPDF()
    pdf.compress = False
    pdf.set_font("Helvetica", size=11)
    pdf.add_page()
    pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def _html() -> bytes:
    return (
        "<html><head><meta charset='windows-1251'><title>Notice</title><style>p{}</style>"
        "</head><body><h1>Порт</h1><ol start='3'><li>one<li>two</ol><table><tr><td>a<td>b"
        "</table><pre>  kept  </pre><p>Правление&nbsp;порта &amp; склад</p></body></html>"
    ).encode("cp1251")


SEEDS: dict[str, list[bytes]] = {
    ".pdf": [
        _plain_pdf(TEXT),
        text_pdf(TEXT, "Second page."),
        encrypted_pdf(_plain_pdf(TEXT), user_password=""),
        image_pdf(1),
    ],
    ".txt": [
        TEXT.encode(),
        TEXT.encode("utf-16"),
        "Правление порта\r\nRiverton\x0cNext".encode("cp1251"),
        "東京の港湾局".encode("shift_jis"),
    ],
    ".md": [
        b"# Title\n\n> quoted *em* [link](http://x.example)\n\n- a\n- b\n\n| a | b |\n|---|---|\n"
        b"| 1 | 2 |\n\n```\ncode\n```\n",
        ("> " * 18 + "deep\n").encode(),
    ],
    ".html": [_html(), b"<p>" + TEXT.encode() + b"</p>" + b"<div>" * 200],
    ".docx": [docx_file(["Heading", TEXT, [["a", "b"], ["c", "d"]], "After the table."])],
}
KINDS = sorted(SEEDS)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "cut", "insert", "token", "repeat", "truncate"]))
        span = draw(st.integers(1, 64))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at : at + span]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=span))
        elif op == "token":
            data[at:at] = draw(st.sampled_from(TOKENS)) * draw(st.integers(1, 50))
        elif op == "repeat":
            data[at:at] = bytes(data[at : at + span]) * draw(st.integers(2, 200))
        elif op == "truncate":
            del data[at:]
    return bytes(data)


@st.composite
def mutated_docx(draw: st.DrawFn) -> bytes:
    """A valid zip whose Word XML parts are mutated: reaches python-docx, not just zipfile."""
    source = zipfile.ZipFile(io.BytesIO(SEEDS[".docx"][0]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        for item in source.infolist():
            content = source.read(item)
            if item.filename.endswith(".xml") and draw(st.booleans()):
                content = draw(mutated([content]))
            out.writestr(item, content)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _extract(folder: Path, suffix: str, data: bytes) -> None:
    path = folder / f"doc{suffix}"
    path.write_bytes(data)
    try:
        result = extract_text(path, max_bytes=MAX_BYTES)
    except DocumentError as exc:  # DocumentSkipped is one
        assert exc.reason in set(Reason) and exc.message, exc
        event(f"{suffix} {exc.reason}")  # --hypothesis-show-statistics shows the spread
        return
    event(f"{suffix} extracted")
    assert isinstance(result, Extracted)
    assert result.text and normalize(result.text) == result.text, result.text[:200]


@pytest.mark.parametrize("suffix", KINDS)
@FUZZ
@given(data=st.data())
def test_mutated_documents_fail_only_with_a_reason(
    folder: Path, suffix: str, data: st.DataObject
) -> None:
    _extract(folder, suffix, data.draw(mutated(SEEDS[suffix])))


@FUZZ
@given(document=mutated_docx())
def test_docx_with_mutated_xml_fails_only_with_a_reason(folder: Path, document: bytes) -> None:
    _extract(folder, ".docx", document)


@pytest.mark.parametrize("suffix", KINDS)
@FUZZ
@given(noise=st.binary(min_size=1, max_size=4096))
def test_random_bytes_fail_only_with_a_reason(folder: Path, suffix: str, noise: bytes) -> None:
    _extract(folder, suffix, noise)


# -- the deadline, through the real worker processes ------------------------------------------


@pytest.fixture(scope="module")
def pool() -> Iterator[ParserPool]:
    parsers = ParserPool(size=1)
    yield parsers
    parsers.close()


def _timed_extract(pool: ParserPool, path: Path) -> tuple[float, Extracted | DocumentError]:
    started = time.monotonic()
    try:
        outcome: Extracted | DocumentError = pool.extract(path, max_bytes=MAX_BYTES,
                                                          timeout=DEADLINE)  # fmt: skip
    except DocumentError as exc:
        outcome = exc
    return time.monotonic() - started, outcome


def test_mutated_pdfs_in_the_pool_never_outlive_the_deadline(
    pool: ParserPool, folder: Path
) -> None:
    """Seeded mutations, not hypothesis: each parse is a round trip to a worker process."""
    good = folder / "good.pdf"
    good.write_bytes(SEEDS[".pdf"][0])
    _, warm = _timed_extract(pool, good)  # starts the worker: start-up is not the deadline's
    assert isinstance(warm, Extracted) and "Riverton" in warm.text
    rng = random.Random(11)
    for i in range(max(8, EXAMPLES // 4)):
        data = bytearray(rng.choice(SEEDS[".pdf"]))
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(data))
            data[at : at + rng.randint(0, 32)] = rng.choice(TOKENS) * rng.randint(1, 20)
        path = folder / f"pool_{i}.pdf"
        path.write_bytes(bytes(data))
        took, outcome = _timed_extract(pool, path)
        assert took < DEADLINE + SLACK, f"{path.name} took {took:.1f}s: {outcome}"
        assert isinstance(outcome, Extracted | DocumentError), outcome


def test_a_parse_past_the_deadline_is_stopped_and_the_pool_goes_on(
    pool: ParserPool, folder: Path
) -> None:
    slow = folder / "slow.html"
    slow.write_text(slow_html(8, "Slow."), encoding="utf-8")  # well over DEADLINE to parse
    took, outcome = _timed_extract(pool, slow)
    assert isinstance(outcome, DocumentError) and outcome.reason == Reason.TIMEOUT, outcome
    assert took < DEADLINE + SLACK, f"the deadline was {DEADLINE}s, the call took {took:.1f}s"
    good = folder / "after.txt"
    good.write_text(TEXT, encoding="utf-8")
    _, after = _timed_extract(pool, good)  # a fresh worker replaced the killed one
    assert isinstance(after, Extracted) and "Riverton" in after.text
