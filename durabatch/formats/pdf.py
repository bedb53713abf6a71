"""PDF documents through pypdf (the default) or PDFium (``--pdf-engine pdfium``).

Both engines share everything but reading the pages: the header check, the
reasons (``encrypted``, ``malformed``, ``no_text_layer``) with their advice,
ligatures and whitespace. PDFium lives in ``formats.pdfium`` and is imported
only when chosen, since pypdfium2 is an optional extra.

pypdf is lenient (``strict=False``) and reports what it repaired through the
``pypdf`` logger. While a PDF is parsed those records are captured instead of
printed, and any Python warning is silenced, so a damaged file costs one
``malformed`` state, never noise on stderr or a warning turned into an error.
Anything pypdf raises on untrusted bytes means the file is damaged.
"""

from __future__ import annotations

import io
import logging
import unicodedata
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError

from durabatch.errors import DocumentError, Reason
from durabatch.formats.text import normalize

_REPAIR_HINT = "repair it (qpdf in.pdf out.pdf, or print it to a new PDF) and add it to a new run"


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def load_engine(engine: str) -> None:
    """Import the engine's library now (a worker does it before it says it is ready)."""
    if engine == "pdfium":
        import durabatch.formats.pdfium  # noqa: F401


def extract_pdf(data: bytes, engine: str = "pypdf") -> tuple[str, int]:
    """Text and page count of a PDF; ``DocumentError`` if there is no text to get."""
    if engine not in ("pypdf", "pdfium"):
        raise ValueError(f"unknown PDF engine {engine!r}")
    if b"%PDF-" not in data[:1024]:
        raise DocumentError(
            Reason.MALFORMED,
            "file is named .pdf but is not a PDF (no %PDF- header; perhaps a saved web page "
            "or a renamed file); get the real document and add it to a new run",
        )
    with _quiet() as log:
        try:
            pages = _read_pages(data, engine)
        except DocumentError:
            raise
        except Exception as exc:  # either engine raises far more than its own error on bad input
            raise _malformed(_describe(exc, log.messages)) from exc
    if not pages:
        raise _malformed("it has no pages")
    text = normalize("\n\n".join(pages))
    if not text:
        raise _no_text_layer(len(pages))
    return text, len(pages)


def _read_pages(data: bytes, engine: str) -> list[str]:
    if engine == "pdfium":
        from durabatch.formats.pdfium import read_pages

        return read_pages(data)
    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        _unlock(reader)
    return [unligature(page.extract_text()) for page in reader.pages]


def _unlock(reader: PdfReader) -> None:
    """Open a PDF whose user password is empty, as many 'protected' PDFs are."""
    try:
        if reader.decrypt("") != PasswordType.NOT_DECRYPTED:
            return
    except DependencyError as exc:
        raise DocumentError(
            Reason.ENCRYPTED,
            "PDF is AES-encrypted and the 'cryptography' package is not installed; "
            "install it (pip install cryptography) or decrypt the file "
            "(qpdf --decrypt in.pdf out.pdf) and add it to a new run",
        ) from exc
    except NotImplementedError as exc:
        raise unsupported_encryption(str(exc)) from exc
    raise password_protected()


def password_protected() -> DocumentError:
    return DocumentError(
        Reason.ENCRYPTED,
        "PDF is password-protected; decrypt it (qpdf --decrypt --password=... in.pdf "
        "out.pdf) and add the decrypted file to a new run",
    )


def unsupported_encryption(detail: str) -> DocumentError:
    return DocumentError(
        Reason.ENCRYPTED,
        f"PDF uses an encryption method that cannot be opened here ({detail}); decrypt it "
        "(qpdf --decrypt in.pdf out.pdf) and add the decrypted file to a new run",
    )


def unligature(text: str) -> str:
    """Ligatures (U+FB00-FB06) are common in typeset PDFs; NFKC spells them out."""
    return "".join(
        unicodedata.normalize("NFKC", c) if "\ufb00" <= c <= "\ufb06" else c for c in text
    )


@contextmanager
def _quiet() -> Iterator[_Captured]:
    logger = logging.getLogger("pypdf")
    handler = _Captured()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _describe(exc: Exception, logged: list[str]) -> str:
    detail = str(exc).rstrip(".") or type(exc).__name__
    if logged and logged[0] not in detail:
        detail = f"{detail}; {logged[0]}"
    return f"it is corrupt or truncated ({detail})"


def _malformed(why: str) -> DocumentError:
    return DocumentError(Reason.MALFORMED, f"PDF cannot be read: {why}; {_REPAIR_HINT}")


def _no_text_layer(pages: int) -> DocumentError:
    return DocumentError(
        Reason.NO_TEXT_LAYER,
        f"PDF has {pages} page(s) but no text layer (probably scanned images); it needs OCR: "
        "run ocrmypdf in.pdf out.pdf and add the OCR'd file to a new run",
    )
