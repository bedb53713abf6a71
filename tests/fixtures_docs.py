"""Build real documents, good and bad, for tests: PDFs with fpdf2 and pypdf, DOCX with
python-docx. fpdf2 is a test-only dependency."""

from __future__ import annotations

import io
import zipfile

import docx
from fpdf import FPDF
from PIL import Image
from pypdf import PdfReader, PdfWriter


def text_pdf(*pages: str) -> bytes:
    """A PDF with one page per argument, each holding that text."""
    pdf = FPDF()
    pdf.core_fonts_encoding = "windows-1252"
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def image_pdf(pages: int = 2) -> bytes:
    """A 'scanned' PDF: every page is one picture and there is no text layer."""
    picture = Image.new("RGB", (200, 260), "white")
    for y in range(20, 240, 12):
        picture.paste((40, 40, 40), (20, y, 180, y + 4))  # lines that look like text
    pdf = FPDF()
    for _ in range(pages):
        pdf.add_page()
        pdf.image(picture, x=10, y=10, w=180)
    return bytes(pdf.output())


def encrypted_pdf(source: bytes, *, user_password: str) -> bytes:
    """``source`` encrypted (RC4-128, which needs no extra crypto package)."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(source)))
    writer.encrypt(user_password=user_password, owner_password="owner-secret")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def docx_file(blocks: list[str | list[list[str]]]) -> bytes:
    """A Word document: a string is a paragraph, a list of rows is a table."""
    document = docx.Document()
    for block in blocks:
        if isinstance(block, str):
            document.add_paragraph(block)
            continue
        table = document.add_table(rows=len(block), cols=len(block[0]))
        for row, values in zip(table.rows, block, strict=True):
            for cell, value in zip(row.cells, values, strict=True):
                cell.text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def zip_file(members: dict[str, str]) -> bytes:
    """A valid zip archive that is not a Word document."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()
