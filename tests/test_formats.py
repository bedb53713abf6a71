"""durabatch.formats: every kind extracts its visible text, every bad input its reason."""

# Real prose in many scripts: typographic quotes, Cyrillic and Greek letters are the point.
# ruff: noqa: RUF001

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib

import pytest
from fixtures_docs import docx_file, encrypted_pdf, image_pdf, text_pdf, zip_file

from durabatch.errors import DocumentError, Reason
from durabatch.formats import Extracted, extract_text
from durabatch.formats.text import normalize

MAX = 10_000_000
SAMPLE_DOCS = pathlib.Path(__file__).resolve().parent.parent / "sample_docs"
BROKEN_SAMPLE = "damaged_report.pdf"


def write(tmp_path: pathlib.Path, name: str, data: bytes | str) -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def extract(path: pathlib.Path, max_bytes: int = MAX) -> Extracted:
    return extract_text(path, max_bytes=max_bytes)


def failure(path: pathlib.Path, max_bytes: int = MAX) -> DocumentError:
    with pytest.raises(DocumentError) as caught:
        extract(path, max_bytes)
    return caught.value


# --- every supported kind -------------------------------------------------------------


def test_text_pdf_pages_and_sha256(tmp_path: pathlib.Path) -> None:
    data = text_pdf("Invoice 2291 from Acme Ltd of Leeds.", "Total due: £4,500 by 3 March 2025.")
    result = extract(write(tmp_path, "invoice.pdf", data))
    assert result.kind == "pdf"
    assert result.pages == 2
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (
        result.text == "Invoice 2291 from Acme Ltd of Leeds.\n\nTotal due: £4,500 by 3 March 2025."
    )


@pytest.mark.parametrize("name", ["scan", "report.bin", "notes.dat"])
def test_pdf_is_recognised_by_its_magic(tmp_path: pathlib.Path, name: str) -> None:
    result = extract(write(tmp_path, name, text_pdf("Quarterly report.")))
    assert (result.kind, result.text) == ("pdf", "Quarterly report.")


def test_suffix_is_case_insensitive(tmp_path: pathlib.Path) -> None:
    assert extract(write(tmp_path, "SCAN.PDF", text_pdf("Upper case."))).kind == "pdf"
    assert extract(write(tmp_path, "README.TXT", "Shouting.")).kind == "text"


@pytest.mark.parametrize("suffix", [".txt", ".text", ".log", ".rst", ".csv"])
def test_plain_text_kinds(tmp_path: pathlib.Path, suffix: str) -> None:
    result = extract(write(tmp_path, f"doc{suffix}", "Line one\nLine two\n"))
    assert (result.kind, result.text, result.pages) == ("text", "Line one\nLine two", None)


def test_plain_text_whitespace_is_normalised(tmp_path: pathlib.Path) -> None:
    raw = "\n\n  Title\t\there \r\n\r\n\r\n\r\nBody\u00a0 text with a soft\u00adhyphen.  \r\nEnd\f"
    result = extract(write(tmp_path, "messy.txt", raw))
    assert result.text == "Title here\n\nBody text with a softhyphen.\nEnd"


def test_markdown_is_rendered_then_read(tmp_path: pathlib.Path) -> None:
    source = (
        "# Budget 2026\n\nThe *council* approved **$4 million** for [roads](https://x.test).\n\n"
        "1. Resurface Main Street\n2. Repair the bridge\n\n"
        "| Item | Cost |\n|---|---|\n| Roads | $3m |\n\n"
        "<script>alert('no')</script>\n\n`code span` and a\nsoft break.\n"
    )
    result = extract(write(tmp_path, "budget.md", source))
    assert result.kind == "markdown"
    assert result.text == (
        "Budget 2026\n\nThe council approved $4 million for roads.\n\n"
        "1. Resurface Main Street\n2. Repair the bridge\n\nItem | Cost\nRoads | $3m\n\n"
        "code span and a soft break."
    )
    assert extract(write(tmp_path, "b.markdown", "# Hi")).kind == "markdown"


HTML_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Acme &amp; Sons</title>
<style>body { color: red } .secret::before { content: "STYLE-TEXT" }</style>
<script>var token = "SCRIPT-TEXT"; if (a < b) { document.write("<p>x</p>"); }</script>
<link rel="stylesheet" href="x.css"></head>
<body><h1>Annual&nbsp;report</h1>
<p>Revenue rose to &euro;5&nbsp;million in
   2024, said <b>Jane</b> <i>Doe</i>.</p>
<noscript>NOSCRIPT-TEXT</noscript><template><p>TEMPLATE-TEXT</p></template>
<ul><li>Paris</li><li>Lyon</li></ul>
<table><tr><th>Year</th><th>Profit</th></tr><tr><td>2024</td><td>&#36;1m</td></tr></table>
<div>Broken <span>markup <p>keeps going
<script src="tracker.js"></script>
</body></html>"""


@pytest.mark.parametrize("suffix", [".html", ".htm", ".xhtml"])
def test_html_visible_text_only(tmp_path: pathlib.Path, suffix: str) -> None:
    result = extract(write(tmp_path, f"page{suffix}", HTML_PAGE))
    assert result.kind == "html"
    assert result.text == (
        "Acme & Sons\n\nAnnual report\n\nRevenue rose to €5 million in 2024, said Jane Doe.\n\n"
        "- Paris\n- Lyon\n\nYear | Profit\n2024 | $1m\n\nBroken markup\n\nkeeps going"
    )
    for hidden in ("STYLE-TEXT", "SCRIPT-TEXT", "NOSCRIPT-TEXT", "TEMPLATE-TEXT", "tracker"):
        assert hidden not in result.text


def test_html_without_head_or_closing_tags(tmp_path: pathlib.Path) -> None:
    page = "<title>Notes</title><p>First<p>Second<br>line<li>item"
    assert (
        extract(write(tmp_path, "bare.html", page)).text == "Notes\n\nFirst\n\nSecond\nline\n- item"
    )


def test_docx_paragraphs_and_tables_in_order(tmp_path: pathlib.Path) -> None:
    data = docx_file(
        [
            "Grant agreement between the Ellery Foundation and Open Rivers Trust.",
            [["Milestone", "Payment"], ["Survey", "$250,000"], ["Weirs", "$400,000"]],
            "Signed in Boston on 2 July 2025.",
        ]
    )
    result = extract(write(tmp_path, "grant.docx", data))
    assert (result.kind, result.pages) == ("docx", None)
    assert result.text == (
        "Grant agreement between the Ellery Foundation and Open Rivers Trust.\n\n"
        "Milestone | Payment\nSurvey | $250,000\nWeirs | $400,000\n\n"
        "Signed in Boston on 2 July 2025."
    )


def test_docx_merged_cell_is_read_once(tmp_path: pathlib.Path) -> None:
    import docx

    document = docx.Document()
    table = document.add_table(rows=2, cols=3)
    merged = table.cell(0, 0).merge(table.cell(0, 2))
    merged.text = "Totals for 2025"
    for cell, value in zip(table.rows[1].cells, ["a", "b", "c"], strict=True):
        cell.text = value
    path = tmp_path / "merged.docx"
    document.save(str(path))
    assert extract(path).text == "Totals for 2025\na | b | c"


def test_extracted_is_frozen(tmp_path: pathlib.Path) -> None:
    result = extract(write(tmp_path, "a.txt", "x"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.text = "y"  # type: ignore[misc]


# --- encodings --------------------------------------------------------------------------

BOM_TEXT = "Café “Zürich” — 5 €, 東京, Москва.\nSecond line."


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_byte_order_marks(tmp_path: pathlib.Path, encoding: str) -> None:
    data = BOM_TEXT.encode(encoding)
    if encoding in ("utf-16-le", "utf-16-be"):
        data = "\ufeff".encode(encoding) + data
    assert extract(write(tmp_path, "bom.txt", data)).text == BOM_TEXT


LEGACY = {
    "cp1252": "“Our café in Zürich will reopen on 3 March,” said Renée Müller, the manager. "
    "The renovation cost €48,000 and was financed by Crédit Agricole. Guests can expect "
    "crème brûlée, a new façade and the same friendly staff — we’re looking forward to it.",
    "latin-1": "Le conseil municipal de Besançon a approuvé un budget de 2,4 millions d'euros. "
    "Selon le maire, Hélène Lefèvre, les travaux débuteront en février à l'école élémentaire.",
    "cp1250": "Rada miasta Łodzi zatwierdziła budżet w wysokości 12 milionów złotych. "
    "Prezydent miasta powiedziała, że prace rozpoczną się w październiku w dzielnicy Bałuty.",
    "shift_jis": "東京都の新しい図書館は来年四月に開館する予定です。建設費は約十二億円で、"
    "市民の寄付も含まれています。館長の山田花子氏は「多くの人に利用してほしい」と話しました。",
    "koi8-r": "Компания 'Северный ветер' объявила о строительстве нового завода в Новосибирске. "
    "Инвестиции составят 3,5 миллиарда рублей. Директор Иван Петров заявил, "
    "что работы начнутся в мае.",
    "cp1251": "Городской совет Екатеринбурга утвердил бюджет на 2026 год. Мэр Алексей Орлов "
    "сообщил, что на ремонт дорог выделено 4,2 миллиарда рублей, а работы начнутся весной.",
    "gb18030": "上海市政府宣布将在明年投资五十亿元用于改善公共交通。市长表示，新的地铁线路将连接"
    "浦东和虹桥机场，预计二零二七年完工。",
    "euc-kr": "서울시는 내년 삼월부터 새로운 버스 노선을 운영할 계획이라고 밝혔다. 총 사업비는 "
    "약 이백억 원이며, 시민들의 의견을 반영하여 노선을 결정하였다.",
    "iso-8859-7": "Η εταιρεία ανακοίνωσε σήμερα ότι θα επενδύσει δύο εκατομμύρια ευρώ στη "
    "Θεσσαλονίκη. Ο διευθύνων σύμβουλος δήλωσε ότι οι εργασίες θα ξεκινήσουν τον Μάιο.",
}


@pytest.mark.parametrize("encoding", sorted(LEGACY))
def test_legacy_encodings_are_not_mojibake(tmp_path: pathlib.Path, encoding: str) -> None:
    text = LEGACY[encoding]
    path = write(tmp_path, "legacy.txt", f"{text}\n\n{text}\n".encode(encoding))
    assert extract(path).text == f"{text}\n\n{text}"


def test_legacy_markdown(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "notes.md", ("# Réunion\n\n" + LEGACY["cp1252"]).encode("cp1252"))
    assert extract(path).text == "Réunion\n\n" + LEGACY["cp1252"]


@pytest.mark.parametrize(
    ("declaration", "encoding", "text"),
    [
        ('<meta charset="windows-1252">', "cp1252", "“Café” €5"),
        ("<meta charset='ISO-8859-1'>", "cp1252", "“Naïve” — 3 €"),  # read as windows-1252
        (
            '<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">',
            "shift_jis",
            "東京駅",
        ),
        ('<META CHARSET="koi8-r">', "koi8-r", "Москва"),
    ],
)
def test_html_declared_charset(
    tmp_path: pathlib.Path, declaration: str, encoding: str, text: str
) -> None:
    page = f"<html><head>{declaration}</head><body><p>{text}</p></body></html>"
    assert extract(write(tmp_path, "page.html", page.encode(encoding))).text == text


def test_html_wrong_declaration_falls_back_to_detection(tmp_path: pathlib.Path) -> None:
    page = f"<meta charset='utf-8'><p>{LEGACY['cp1252']}</p>"
    assert extract(write(tmp_path, "page.html", page.encode("cp1252"))).text == LEGACY["cp1252"]


# --- every bad input ends in its reason ----------------------------------------------------


def test_encrypted_pdf_fails_with_advice(tmp_path: pathlib.Path) -> None:
    data = encrypted_pdf(text_pdf("Salaries 2025"), user_password="hunter2")
    error = failure(write(tmp_path, "salaries.pdf", data))
    assert error.reason is Reason.ENCRYPTED
    assert not error.skipped
    assert "password" in error.message
    assert "qpdf --decrypt" in error.message


def test_pdf_with_empty_user_password_is_read(tmp_path: pathlib.Path) -> None:
    data = encrypted_pdf(text_pdf("Open to all readers."), user_password="")
    assert extract(write(tmp_path, "restricted.pdf", data)).text == "Open to all readers."


def test_image_only_pdf_needs_ocr(tmp_path: pathlib.Path) -> None:
    error = failure(write(tmp_path, "scan.pdf", image_pdf(pages=3)))
    assert error.reason is Reason.NO_TEXT_LAYER
    assert not error.skipped
    assert "3 page(s)" in error.message
    assert "OCR" in error.message


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
def test_truncated_pdf_is_malformed(
    tmp_path: pathlib.Path, capfd: pytest.CaptureFixture[str], keep: float
) -> None:
    data = text_pdf("Page one.", "Page two.")
    error = failure(write(tmp_path, "cut.pdf", data[: int(len(data) * keep)]))
    assert error.reason is Reason.MALFORMED
    assert not error.skipped
    assert "qpdf" in error.message
    assert capfd.readouterr().err == ""  # pypdf's repair log does not leak to stderr


@pytest.mark.parametrize(
    "data",
    [
        b"this is not a pdf at all, just words",
        b"<html><body>404 Not Found</body></html>",
        b"%PDF-1.7\n" + bytes(range(256)) * 8,
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"trailer << /Root 1 0 R >>\n%%EOF",
    ],
)
def test_garbage_named_pdf_is_malformed(
    tmp_path: pathlib.Path, capfd: pytest.CaptureFixture[str], data: bytes
) -> None:
    assert failure(write(tmp_path, "fake.pdf", data)).reason is Reason.MALFORMED
    assert capfd.readouterr().err == ""


def test_binary_file_named_txt_is_skipped(tmp_path: pathlib.Path) -> None:
    data = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4
    error = failure(write(tmp_path, "program.txt", data))
    assert error.reason is Reason.UNSUPPORTED_TYPE
    assert error.skipped
    assert "binary" in error.message


def test_control_characters_without_nul_are_binary(tmp_path: pathlib.Path) -> None:
    data = bytes(b % 32 for b in range(1, 2000) if b % 32 not in (0, 9, 10, 12, 13))
    assert failure(write(tmp_path, "blob.log", data)).reason is Reason.UNSUPPORTED_TYPE


def test_utf16_without_bom_counts_as_binary(tmp_path: pathlib.Path) -> None:
    error = failure(write(tmp_path, "notes.txt", "Hello there".encode("utf-16-le")))
    assert error.reason is Reason.UNSUPPORTED_TYPE


@pytest.mark.parametrize("name", ["empty.txt", "empty.pdf", "empty.docx", "empty.md", "empty"])
def test_zero_bytes_is_empty(tmp_path: pathlib.Path, name: str) -> None:
    path = write(tmp_path, name, b"")
    if name == "empty":  # no extension and no magic: not a type we know
        assert failure(path).reason is Reason.UNSUPPORTED_TYPE
        return
    error = failure(path)
    assert (error.reason, error.skipped) == (Reason.EMPTY, True)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("blank.txt", b" \r\n\t\n\xc2\xa0\n"),
        ("blank.md", b"<!-- just a comment -->\n\n---\n"),
        ("blank.html", b"<html><head><title> </title><script>x()</script></head><body> </body>"),
        ("blank.docx", docx_file(["", "   "])),
    ],
)
def test_no_visible_text_is_empty(tmp_path: pathlib.Path, name: str, data: bytes) -> None:
    error = failure(write(tmp_path, name, data))
    assert (error.reason, error.skipped) == (Reason.EMPTY, True)


@pytest.mark.parametrize("name", ["photo.jpg", "sheet.xlsx", "archive.zip", "old.doc", "Makefile"])
def test_unknown_extension_is_unsupported(tmp_path: pathlib.Path, name: str) -> None:
    error = failure(write(tmp_path, name, b"some content"))
    assert (error.reason, error.skipped) == (Reason.UNSUPPORTED_TYPE, True)
    assert ".pdf" in error.message  # says what is supported


def test_too_large_is_checked_before_reading(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "huge.txt"
    with path.open("wb") as file:
        file.truncate(8 * 1024**3)  # sparse: reading it would take far too long
    error = failure(path, max_bytes=1_000_000)
    assert (error.reason, error.skipped) == (Reason.TOO_LARGE, True)
    assert "1,000,000" in error.message


def test_exactly_max_bytes_is_allowed(tmp_path: pathlib.Path) -> None:
    assert extract(write(tmp_path, "a.txt", "abcd"), max_bytes=4).text == "abcd"
    assert failure(write(tmp_path, "b.txt", "abcde"), max_bytes=4).reason is Reason.TOO_LARGE


def test_missing_file(tmp_path: pathlib.Path) -> None:
    error = failure(tmp_path / "gone.pdf")
    assert (error.reason, error.skipped) == (Reason.MISSING, False)
    assert "gone.pdf" in error.message


def test_directory_is_not_a_document(tmp_path: pathlib.Path) -> None:
    (tmp_path / "folder.txt").mkdir()
    assert failure(tmp_path / "folder.txt").reason is Reason.MISSING


def test_fifo_is_not_read(tmp_path: pathlib.Path) -> None:
    os.mkfifo(tmp_path / "pipe.txt")  # reading it would block forever
    assert failure(tmp_path / "pipe.txt").reason is Reason.MISSING


@pytest.mark.parametrize(
    "data",
    [
        b"PK\x03\x04 this zip is cut short",
        b"plain words, not a zip",
        zip_file({"hello.txt": "a zip, but not a Word document"}),
        zip_file({"[Content_Types].xml": "<Types><broken", "word/document.xml": "<w:document"}),
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512,  # an old binary .doc
    ],
)
def test_corrupt_docx_is_malformed(tmp_path: pathlib.Path, data: bytes) -> None:
    error = failure(write(tmp_path, "contract.docx", data))
    assert (error.reason, error.skipped) == (Reason.MALFORMED, False)
    assert "re-save" in error.message


def test_truncated_docx_is_malformed(tmp_path: pathlib.Path) -> None:
    data = docx_file(["A paragraph."])
    assert failure(write(tmp_path, "cut.docx", data[: len(data) // 2])).reason is Reason.MALFORMED


def test_password_protected_docx_is_encrypted(tmp_path: pathlib.Path) -> None:
    ole = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64 + "EncryptedPackage".encode("utf-16-le")
    )
    error = failure(write(tmp_path, "secret.docx", ole))
    assert (error.reason, error.skipped) == (Reason.ENCRYPTED, False)


# --- the committed sample documents --------------------------------------------------------

SAMPLES = sorted(p.name for p in SAMPLE_DOCS.iterdir() if p.is_file())


def test_sample_docs_folder_is_small_and_varied() -> None:
    assert 7 <= len(SAMPLES) <= 10
    assert sum((SAMPLE_DOCS / name).stat().st_size for name in SAMPLES) < 200_000
    assert BROKEN_SAMPLE in SAMPLES
    assert {pathlib.Path(name).suffix for name in SAMPLES} >= {".pdf", ".md", ".html", ".txt"}


@pytest.mark.parametrize("name", [name for name in SAMPLES if name != BROKEN_SAMPLE])
def test_sample_doc_extracts(name: str) -> None:
    result = extract(SAMPLE_DOCS / name)
    assert len(result.text.split()) > 150
    assert result.text == normalize(result.text)
    assert "\ufffd" not in result.text


def test_broken_sample_is_malformed(capfd: pytest.CaptureFixture[str]) -> None:
    assert failure(SAMPLE_DOCS / BROKEN_SAMPLE).reason is Reason.MALFORMED
    assert capfd.readouterr().err == ""


def test_sample_kinds() -> None:
    kinds = [extract(SAMPLE_DOCS / name).kind for name in SAMPLES if name != BROKEN_SAMPLE]
    assert sorted(set(kinds)) == ["docx", "html", "markdown", "pdf", "text"]
    assert kinds.count("pdf") >= 2


def test_sample_html_hides_script_and_style() -> None:
    text = extract(SAMPLE_DOCS / "port_expansion_newsletter.html").text
    assert "Port director Ingrid Solberg" in text
    for hidden in ("SECRET_TRACKING_CODE", "dataLayer", "font-family", "ADVERTISEMENT", "Buy now"):
        assert hidden not in text
    assert "enable JavaScript" not in text


def test_sample_cp1252_letter_is_decoded() -> None:
    text = extract(SAMPLE_DOCS / "supplier_letter_cp1252.txt").text
    assert "Königstraße 48, 70173 Stuttgart" in text
    assert "“Réserve 18 mois”" in text
    assert "€31,480.00" in text
    assert "he’d be" in text


def test_sample_pdf_pages() -> None:
    result = extract(SAMPLE_DOCS / "northwind_acquisition_release.pdf")
    assert result.pages == 2
    assert "“Brightfield gives us that" in result.text
