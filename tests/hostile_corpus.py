"""A corpus of hostile inputs, written at test time into a folder, the same bytes every time.

``write_corpus(folder)`` writes every file and returns what each one must end as: a
``(status, reason)`` pair, and for the documents that must be read, the words their text
must contain (so that mojibake or a lost page fails the test). Random bytes come from seeded
generators; PDFs are built with fpdf2 and pypdf, like ``fixtures_docs``.

Three cases need the file system rather than bytes:

- the symlink loop (``loop_a.txt`` -> ``loop_b.txt`` -> ``loop_a.txt``, and a folder link
  back to its parent, which must not be walked forever);
- the unreadable file (mode 000; root reads it anyway unless it runs without
  CAP_DAC_OVERRIDE, see ``test_hostile.py``);
- the file deleted between discovery and extraction, which the test removes itself while
  a slow first document holds the only parser (``DELETED`` and ``SLOW``).
"""

from __future__ import annotations

import codecs
import io
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from fixtures_docs import encrypted_pdf, image_pdf, text_pdf, zip_file
from pypdf import PdfWriter

from durabatch.config import Settings

# the default size limit (DURABATCH_MAX_BYTES): the big file is one byte over it
MAX_BYTES = Settings().max_bytes
SLOW = "a_slow.html"  # sorts first; holds the parser while DELETED is removed
DELETED = "deleted_after_discovery.txt"
UNREADABLE = "unreadable.txt"

PDF_TEXT = "Quarterly report of the Riverton harbour board, March 2025."
JAPANESE = "東京の港湾局は二〇二五年三月に新しい倉庫の建設を承認した。"
RUSSIAN = "Правление порта Ривертон утвердило бюджет на строительство нового склада."
ACCENTED = "Café Müller in Zürich paid 1 200 € for the façade — naïve but déjà vu."


@dataclass
class Outcome:
    status: str
    reason: str | None = None
    words: tuple[str, ...] = ()  # must appear in the extracted text (done documents only)


@dataclass
class Corpus:
    folder: Path
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # file name -> outcome

    def add(self, name: str, data: bytes, outcome: Outcome) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        self.outcomes[name] = outcome
        return path


def write_corpus(folder: Path, *, slow_html: str) -> Corpus:
    """Write every hostile input into ``folder`` (created); ``slow_html`` is the slow page."""
    folder.mkdir(parents=True)
    corpus = Corpus(folder)
    corpus.add(SLOW, slow_html.encode(), Outcome("done"))
    corpus.add(DELETED, b"This note is deleted before it is read.\n", Outcome("failed", "missing"))
    _pdfs(corpus)
    _texts(corpus)
    _containers(corpus)
    _file_system(corpus)
    return corpus


# -- PDFs ---------------------------------------------------------------------------------


def _pdfs(corpus: Corpus) -> None:
    whole = text_pdf(PDF_TEXT + " " + "The board met twelve times. " * 30)
    corpus.add("truncated.pdf", whole[: len(whole) // 2], Outcome("failed", "malformed"))
    corpus.add("broken_xref.pdf", broken_xref(whole), Outcome("done", None, ("Riverton",)))
    corpus.add("xref_loop.pdf", xref_loop(whole), Outcome("done", None, ("Riverton",)))
    corpus.add("xref_loop_two.pdf", xref_loop(whole, hops=2), Outcome("done", None, ("Riverton",)))
    empty_password = encrypted_pdf(text_pdf(PDF_TEXT), user_password="")
    corpus.add("encrypted_empty_password.pdf", empty_password, Outcome("done", None, ("Riverton",)))
    secret = encrypted_pdf(text_pdf(PDF_TEXT), user_password="hunter2")
    corpus.add("encrypted.pdf", secret, Outcome("failed", "encrypted"))
    corpus.add("scanned.pdf", image_pdf(), Outcome("failed", "no_text_layer"))
    corpus.add("zero_bytes.pdf", b"", Outcome("skipped", "empty"))
    noise = random.Random(1).randbytes(64 * 1024)
    corpus.add("random_bytes.pdf", noise, Outcome("failed", "malformed"))
    corpus.add("no_pages.pdf", _no_pages_pdf(), Outcome("failed", "malformed"))


def broken_xref(pdf: bytes) -> bytes:
    """Every offset in the cross-reference table points at the wrong byte."""
    start = pdf.rindex(b"\nxref\n")
    end = pdf.index(b"trailer", start)
    table = re.sub(rb"\d{10} 00000 n", b"0000000007 00000 n", pdf[start:end])
    return pdf[:start] + table + pdf[end:]


def xref_loop(pdf: bytes, *, hops: int = 1) -> bytes:
    """Incremental updates whose trailers' ``/Prev`` lead back to themselves.

    With ``hops=1`` the last table names itself as the previous one; with 2, two update
    sections name each other. The original table is never reached through ``/Prev``."""
    tail = pdf[pdf.rindex(b"trailer") :]
    size = re.search(rb"/Size (\d+)", tail)
    root = re.search(rb"/Root (\d+ \d+ R)", tail)
    assert size and root
    offsets = [len(pdf) + 1]
    for _ in range(hops - 1):
        offsets.append(offsets[-1] + len(_update(size[1], root[1], 0, 0)))
    out = pdf
    for i, offset in enumerate(offsets):
        out += _update(size[1], root[1], prev=offsets[(i + 1) % hops], at=offset)
    return out


def _update(size: bytes, root: bytes, prev: int, at: int) -> bytes:
    trailer = b"<< /Size " + size + b" /Root " + root + b" /Prev %010d >>" % prev
    table = b"\nxref\n0 1\n0000000000 65535 f \ntrailer\n"
    return table + trailer + b"\nstartxref\n%010d\n%%%%EOF" % at


def _no_pages_pdf() -> bytes:
    writer = PdfWriter()
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


# -- text, HTML -----------------------------------------------------------------------------


def _texts(corpus: Corpus) -> None:
    # valid UTF-8 accents with one stray byte in the middle: the accents must survive
    invalid = (ACCENTED + "\n").encode() + b"Broken byte here: \xff\xfe end.\n"
    invalid += (ACCENTED + "\n").encode() * 3
    corpus.add("invalid_utf8.txt", invalid, Outcome("done", None, ("Café Müller", "Zürich")))
    utf16 = codecs.BOM_UTF16_LE + (RUSSIAN + "\n" + ACCENTED).encode("utf-16-le")
    corpus.add("utf16_bom.txt", utf16, Outcome("done", None, ("Ривертон", "Zürich")))
    corpus.add("shift_jis.html", _page(JAPANESE, "Shift_JIS"), Outcome("done", None, ("東京",)))
    corpus.add("cp1251.html", _page(RUSSIAN, "windows-1251"), Outcome("done", None, ("склада",)))
    deep = "<div>" * 100_000 + "<p>Deep inside the Riverton archive.</p>" + "</div>" * 100_000
    corpus.add("deeply_nested.html", deep.encode(), Outcome("done", None, ("Riverton archive",)))
    unclosed = "<span><b><i>" * 50_000 + "Unclosed all the way down in Riverton."
    corpus.add("unclosed_nested.html", unclosed.encode(), Outcome("done", None, ("Riverton",)))
    quotes = ">" * 50_000 + " Quoted far too deep in Riverton.\n"
    corpus.add("deeply_nested.md", quotes.encode(), Outcome("done", None, ("Riverton",)))
    corpus.add("huge.txt", b"", Outcome("skipped", "too_large"))
    with (corpus.folder / "huge.txt").open("r+b") as huge:
        huge.write(b"far too long\n")
        huge.truncate(MAX_BYTES + 1)  # sparse: instant to make, no disk used
    noise = random.Random(2).randbytes(8192)
    corpus.add("binary.txt", noise, Outcome("skipped", "unsupported_type"))
    high = bytes(byte | 0x80 for byte in noise)  # no NUL, no controls: fits no encoding
    corpus.add("high_bytes.txt", high, Outcome("skipped", "unsupported_type"))


def _page(text: str, charset: str) -> bytes:
    markup = (
        f'<html><head><meta charset="{charset}"><title>Notice</title></head>'
        f"<body><p>{text}</p></body></html>"
    )
    return markup.encode(charset)


# -- containers --------------------------------------------------------------------------------


def _containers(corpus: Corpus) -> None:
    rng = random.Random(3)
    junk = zip_file({"[Content_Types].xml": "not xml at all <<<", "word/document.xml": "<<<"})
    corpus.add("zip_of_junk.docx", junk, Outcome("failed", "malformed"))
    members = {f"junk_{i}.bin": rng.randbytes(512).decode("latin-1") for i in range(4)}
    corpus.add("zip_of_random.docx", zip_file(members), Outcome("failed", "malformed"))
    corpus.add("random_bytes.docx", rng.randbytes(4096), Outcome("failed", "malformed"))


# -- the file system ---------------------------------------------------------------------------


def _file_system(corpus: Corpus) -> None:
    folder = corpus.folder
    os.symlink("loop_b.txt", folder / "loop_a.txt")
    os.symlink("loop_a.txt", folder / "loop_b.txt")
    corpus.outcomes["loop_a.txt"] = Outcome("failed", "missing")
    corpus.outcomes["loop_b.txt"] = Outcome("failed", "missing")
    (folder / "sub").mkdir()
    os.symlink("..", folder / "sub" / "back_up")  # a folder loop: never walked into
    corpus.add("sub/inside.txt", b"A note one level down, in Riverton.\n",
               Outcome("done", None, ("Riverton",)))  # fmt: skip
    path = corpus.add(UNREADABLE, b"Nobody may read this.\n", Outcome("failed", "missing"))
    path.chmod(0)
