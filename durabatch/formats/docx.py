"""Word documents (``.docx``) through python-docx.

Body paragraphs and tables are read in document order; a table becomes one
line per row, cells separated by `` | ``, and a cell merged across columns
is read once.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import docx
from docx.document import Document
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph

from durabatch.errors import DocumentError, Reason
from durabatch.formats.text import normalize

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")


def extract_docx(data: bytes) -> str:
    """Text of a ``.docx`` file; ``DocumentError`` if it cannot be opened."""
    document = _open(data)
    try:
        blocks = list(_blocks(document))
    except Exception as exc:  # python-docx raises many kinds on a damaged part
        raise _malformed(f"its contents cannot be read ({exc})") from exc
    return normalize("\n\n".join(blocks))


def _open(data: bytes) -> Document:
    if data.startswith(_OLE_MAGIC):
        raise _not_a_package(data)
    try:
        return docx.Document(io.BytesIO(data))
    except Exception as exc:  # a bad zip, a missing part, broken XML, the wrong content type
        raise _malformed(f"it is not a valid Word package ({exc})") from exc


def _blocks(container: Document | _Cell) -> Iterator[str]:
    for item in container.iter_inner_content():
        if isinstance(item, Paragraph):
            yield item.text
        else:
            yield "\n".join(_table_rows(item))


def _table_rows(table: Table) -> Iterator[str]:
    for row in table.rows:
        cells: list[str] = []
        seen: set[object] = set()
        for cell in row.cells:
            if cell._tc not in seen:  # a merged cell repeats in every column it spans
                seen.add(cell._tc)
                cells.append(" ".join(_blocks(cell)))
        yield " | ".join(cells)


def _not_a_package(data: bytes) -> DocumentError:
    if _ENCRYPTED_PACKAGE in data:
        return DocumentError(
            Reason.ENCRYPTED,
            "Word document is password-protected; open it in Word, remove the password "
            "(File > Info > Protect Document) and add it to a new run",
        )
    return _malformed("it is an old binary Word (.doc) file with a .docx name")


def _malformed(why: str) -> DocumentError:
    return DocumentError(
        Reason.MALFORMED,
        f"Word document cannot be read: {why}; open and re-save it in Word or "
        "LibreOffice (or export it to PDF) and add it to a new run",
    )
