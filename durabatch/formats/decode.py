"""Bytes to text, without mojibake.

The order matters: a byte-order mark is the strongest evidence, then strict
UTF-8 (which almost never decodes legacy text by accident), then what an HTML
page declares about itself, then UTF-8 with a few damaged bytes (a file cut or
spliced mid-character is still UTF-8: guessing a legacy encoding for it would
turn every accent into mojibake), then charset-normalizer's statistical guess,
and finally cp1252 with replacement characters so that something always comes
out - unless most of the bytes are non-ASCII and no encoding fits them: that is
binary data with a text name, not a document.
"""

from __future__ import annotations

import codecs
import re
import unicodedata

from charset_normalizer import CharsetMatch, from_bytes

from durabatch.errors import DocumentSkipped, Reason

# UTF-32 before UTF-16: the UTF-32-LE mark starts with the UTF-16-LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_META_CHARSET = re.compile(rb"<meta[^>]*?charset\s*=\s*[\"']?\s*([a-z0-9_.:-]+)", re.IGNORECASE)
# Browsers read these declarations as windows-1252 (WHATWG Encoding), and so do we.
_READ_AS_CP1252 = frozenset({"latin-1", "iso8859-1", "ascii"})
_WHITESPACE_CONTROLS = frozenset("\t\n\r\f\v")
_MAX_CONTROL_RATIO = 0.05
# Damaged UTF-8: at least this many well-formed non-ASCII characters per bad byte. Legacy
# text almost never forms well-formed multi-byte UTF-8 sequences by accident.
_MIN_GOOD_PER_DAMAGED = 4
# No encoding fits and more than this share of bytes is non-ASCII: binary, not text.
_MAX_UNFITTED_HIGH_RATIO = 0.3


def decode_bytes(data: bytes, *, html: bool = False) -> str:
    """Decode a text document; raise ``DocumentSkipped`` if it is binary."""
    text = _decode_bom(data)
    if text is None:
        if b"\x00" in data:
            raise _binary("it contains NUL bytes")
        text = _decode_unmarked(data, html=html)
    if _looks_binary(text):
        raise _binary("most of it is control characters, not text")
    return text


def _decode_bom(data: bytes) -> str | None:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace")
    return None


def _decode_unmarked(data: bytes, *, html: bool) -> str:
    text = _decode_utf8(data)
    if text is None and html:
        text = _decode_declared(data)
    if text is None:
        text = _decode_damaged_utf8(data)
    return _guess(data) if text is None else text


def _decode_utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decode_damaged_utf8(data: bytes) -> str | None:
    """UTF-8 with a few invalid bytes, each shown as U+FFFD; None if it is not UTF-8."""
    text = data.decode("utf-8", errors="replace")
    damaged = text.count("\ufffd")
    good = sum(1 for char in text if char > "\x7f") - damaged
    if good and good >= damaged * _MIN_GOOD_PER_DAMAGED:
        return text
    return None


def _decode_declared(data: bytes) -> str | None:
    """The encoding an HTML page names in ``<meta charset>`` or ``http-equiv``."""
    match = _META_CHARSET.search(data[:4096])
    if match is None:
        return None
    try:
        encoding = codecs.lookup(match.group(1).decode("ascii")).name
    except (LookupError, UnicodeDecodeError):
        return None
    if encoding.startswith(("utf-16", "utf-32")):
        return None  # a page we could read as ASCII is not UTF-16, whatever it says
    if encoding in _READ_AS_CP1252:
        encoding = "cp1252"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


def _guess(data: bytes) -> str:
    results = from_bytes(data)
    best = results.best()
    if best is None:
        high = sum(1 for byte in data if byte > 0x7F)
        if high > len(data) * _MAX_UNFITTED_HIGH_RATIO:
            raise _binary("no text encoding fits its bytes")
        return data.decode("cp1252", errors="replace")
    # Western European text often fits cp1250, cp1252 and cp1257 equally well;
    # cp1252 is by far the most common of them, so it wins a tie.
    for match in results:
        if match.encoding == "cp1252" and _at_least_as_good(match, best):
            return str(match)
    return str(best)


def _at_least_as_good(match: CharsetMatch, best: CharsetMatch) -> bool:
    return match.chaos <= best.chaos and match.coherence >= best.coherence


def _looks_binary(text: str) -> bool:
    sample = text[:65536]
    if not sample:
        return False
    controls = sum(
        1
        for char in sample
        if char == "\ufffd"
        or (unicodedata.category(char) == "Cc" and char not in _WHITESPACE_CONTROLS)
    )
    return controls / len(sample) > _MAX_CONTROL_RATIO


def _binary(why: str) -> DocumentSkipped:
    return DocumentSkipped(
        Reason.UNSUPPORTED_TYPE,
        f"file looks binary, not text ({why}); if it really is a document, "
        "convert it to PDF, DOCX, HTML, Markdown or UTF-8 text and add it to a new run",
    )
