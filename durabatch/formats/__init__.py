"""Text extraction: one document's bytes in, its visible text out.

``extract_text`` is the whole interface. It decides the kind of a file from
its extension (and the ``%PDF-`` magic), checks the size with ``stat`` before
reading anything, reads the bytes once (they are what ``sha256`` describes),
and hands them to the extractor for that kind (for a PDF, the engine chosen
with ``--pdf-engine``: pypdf or PDFium). Every way a document can fail
becomes a ``DocumentSkipped`` (expected: not a document we handle) or a
``DocumentError`` (the user can act on it) with a ``Reason`` and a message that
says what to do next. The engine runs this in a worker process with a deadline.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pathlib
import stat
from collections.abc import Callable
from dataclasses import dataclass

from durabatch.errors import DocumentError, DocumentSkipped, Reason
from durabatch.names import storable, undo

__all__ = ["SUFFIXES", "Extracted", "extract_text", "load_parsers"]

SUFFIXES: dict[str, str] = {
    ".pdf": "pdf",
    ".txt": "text",
    ".text": "text",
    ".log": "text",
    ".rst": "text",
    ".csv": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".docx": "docx",
}


# each imported on first use (load_parsers imports them all): the run's own process,
# which parses nothing, starts without them and their charset detector and Markdown
# parser (about 50 ms of its start-up)
def _plain(data: bytes) -> str:
    from durabatch.formats.text import extract_plain

    return extract_plain(data)


def _markdown(data: bytes) -> str:
    from durabatch.formats.markdown import extract_markdown

    return extract_markdown(data)


def _html(data: bytes) -> str:
    from durabatch.formats.html import extract_html

    return extract_html(data)


def _docx(data: bytes) -> str:
    from durabatch.formats.docx import extract_docx

    return extract_docx(data)


_TEXT_EXTRACTORS: dict[str, Callable[[bytes], str]] = {
    "text": _plain,
    "markdown": _markdown,
    "html": _html,
    "docx": _docx,
}


def load_parsers(pdf_engine: str = "pypdf") -> None:
    """Import every parser now. They are imported on first use otherwise, so a command
    that parses nothing (status, cost, the engine's own process) starts fast; a parser
    process loads them before it says it is ready."""
    import durabatch.formats.docx
    import durabatch.formats.html
    import durabatch.formats.markdown
    import durabatch.formats.text  # noqa: F401
    from durabatch.formats.pdf import load_engine

    load_engine(pdf_engine)


@dataclass(frozen=True)
class Extracted:
    text: str  # visible text, whitespace normalised, paragraphs separated by blank lines
    sha256: str  # hex sha256 of the exact bytes read
    kind: str  # "pdf" | "text" | "markdown" | "html" | "docx"
    pages: int | None  # PDF page count, else None


def extract_text(path: pathlib.Path, *, max_bytes: int, pdf_engine: str = "pypdf") -> Extracted:
    """Read ``path`` and return its text, or raise ``DocumentError``/``DocumentSkipped``."""
    size = _size(path)
    kind = _kind(path)
    if size > max_bytes:
        raise _too_large(size, max_bytes)
    if size == 0:
        raise DocumentSkipped(Reason.EMPTY, "file is empty (0 bytes); nothing to process")
    data = _read(path, max_bytes)
    text, pages = _extract(kind, data, pdf_engine)
    return Extracted(text, hashlib.sha256(data).hexdigest(), kind, pages)


def _size(path: pathlib.Path) -> int:
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise _not_utf8(path) or _missing(path, _gone(path)) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _missing(path, "it is a symbolic link in a loop of links") from exc
        raise _missing(path, f"it cannot be examined ({exc.strerror})") from exc
    if stat.S_ISDIR(info.st_mode):  # the walk could not list it
        raise _unlisted(path)
    if not stat.S_ISREG(info.st_mode):  # a FIFO that would block the read, a device...
        raise _missing(path, "it is not a regular file")
    return info.st_size


def _unlisted(path: pathlib.Path) -> DocumentError:
    try:
        with os.scandir(path):
            os.stat(os.path.join(path, os.curdir))  # searchable too, or no file can be read
        why = "could not be listed when the run looked for documents"
    except OSError as exc:
        why = f"cannot be listed ({exc.strerror})"
    return DocumentError(
        Reason.MISSING,
        f"{path} is a folder that {why}, so the files in it were not seen; "
        "fix its permissions, then start a new run over it",
    )


def _not_utf8(path: pathlib.Path) -> DocumentError | None:
    """For a path the walk wrote out because a name on it is not UTF-8 (see
    ``durabatch.names``): the file is there, under a name that cannot be stored."""
    found = undo(path)
    if found is None:
        return None
    what = "its name" if found[1] == path else f"the name of its folder {found[1]}"
    return DocumentError(
        Reason.MISSING,
        f"{path} cannot be processed: {what} is not valid UTF-8 (each such byte is shown "
        "here as \\xNN), so durabatch cannot store it; rename it to UTF-8 (e.g. "
        "`convmv -f latin1 -t utf8 --notest FILE`, or `mv`), then add it to a new run",
    )


def _gone(path: pathlib.Path) -> str:
    if path.is_symlink():
        return f"it is a symbolic link to {storable(os.readlink(path))}, which does not exist"
    return "it does not exist (moved or deleted?)"


def _kind(path: pathlib.Path) -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None and _starts_like_pdf(path):
        kind = "pdf"
    if kind is None:
        supported = " ".join(sorted(SUFFIXES))
        raise DocumentSkipped(
            Reason.UNSUPPORTED_TYPE,
            f"'{path.suffix or path.name}' files are not supported (supported: {supported}); "
            "convert it to one of these to include it",
        )
    return kind


def _starts_like_pdf(path: pathlib.Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(1024).lstrip().startswith(b"%PDF-")
    except OSError as exc:
        raise _missing(path, f"it cannot be read ({exc.strerror})") from exc


def _read(path: pathlib.Path, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
            size = os.fstat(file.fileno()).st_size
    except OSError as exc:
        raise _missing(path, f"it cannot be read ({exc.strerror})") from exc
    if len(data) > max_bytes:  # it grew between stat and read
        raise _too_large(size, max_bytes)
    return data


def _extract(kind: str, data: bytes, pdf_engine: str) -> tuple[str, int | None]:
    if kind == "pdf":
        from durabatch.formats.pdf import extract_pdf

        return extract_pdf(data, pdf_engine)
    text = _TEXT_EXTRACTORS[kind](data)
    if not text:
        raise DocumentSkipped(Reason.EMPTY, f"{kind} file has no visible text; nothing to process")
    return text, None


def _too_large(size: int, max_bytes: int) -> DocumentSkipped:
    return DocumentSkipped(
        Reason.TOO_LARGE,
        f"file is {size:,} bytes, over the {max_bytes:,}-byte limit; split it, "
        "or raise the size limit (DURABATCH_MAX_BYTES, or max_bytes in durabatch.toml) and "
        "add it to a new run",
    )


def _missing(path: pathlib.Path, why: str) -> DocumentError:
    return DocumentError(
        Reason.MISSING,
        f"{path} cannot be processed: {why}; restore it (or fix its permissions or link), "
        "or leave it out of the inputs",
    )
