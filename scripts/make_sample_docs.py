"""Regenerate the binary and legacy-encoded documents in ``sample_docs/``.

Run from the repository root: ``.venv/bin/python scripts/make_sample_docs.py``.
The Markdown, HTML and UTF-8 text samples are written by hand and committed as
they are; this script makes the ones that need a library or a legacy encoding:
two text PDFs (fpdf2, a test-only dependency), a Word document (python-docx),
a cp1252 letter, and ``damaged_report.pdf``, which is broken on purpose and
must extract as ``malformed``.
"""

# The samples are prose with typographic quotes and dashes on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import datetime as dt
import io
import pathlib
import random
import zipfile

import docx
from fpdf import FPDF

OUT = pathlib.Path(__file__).resolve().parent.parent / "sample_docs"
FIXED_DATE = dt.datetime(2025, 10, 1, 9, 0, tzinfo=dt.UTC)

BOARD_MINUTES = [
    "Harbourline Freight Ltd - Minutes of the Board Meeting",
    "Held on Tuesday 23 September 2025 at 10:00 at the company's head office, "
    "Waterfront House, 9 Dock Street, Southampton SO14 3XX.",
    "Present: Margaret Ellison (Chair), Daniel Kowalski (Chief Executive), "
    "Fiona MacLeod (Finance Director), Arjun Mehta (Operations Director), "
    "Catherine Dubois (Non-Executive Director). In attendance: Owen Pritchard "
    "(Company Secretary).",
    "1. Trading update. Daniel Kowalski reported revenue of £18.4 million for the "
    "quarter to 31 August 2025, up 9% on the same quarter last year. Volumes on the "
    "Southampton to Rotterdam route recovered after the strike at the Port of Antwerp "
    "ended in July. Operating profit was £2.1 million against a budget of £1.9 million.",
    "2. Fleet renewal. Arjun Mehta presented the proposal to replace twelve tractor units "
    "with battery-electric trucks from Volvo Trucks UK at a total cost of £3.6 million. "
    "The Department for Transport's zero-emission freight grant would cover £840,000. "
    "The board approved the purchase, subject to the grant being confirmed by "
    "30 November 2025.",
    "3. Banking facilities. Fiona MacLeod reported that Lloyds Bank had offered to extend "
    "the £10 million revolving credit facility to March 2029 at a margin of 2.15% over "
    "SONIA. The board authorised her and the Chief Executive to sign the amended agreement.",
    "4. Rotterdam depot. The lease on the Rotterdam depot at Waalhaven ends on "
    "31 January 2026. The landlord, Havenbedrijf Vastgoed BV, has proposed a new five-year "
    "lease at EUR 410,000 a year, an increase of 12%. Catherine Dubois asked management to "
    "compare a move to the Maasvlakte area before the next meeting.",
    "5. Health and safety. There were no reportable accidents in the quarter. One driver "
    "was injured in a minor collision near Felixstowe on 14 August; he returned to work "
    "after a week.",
    "6. Any other business. The Chair thanked Owen Pritchard, who retires at the end of the "
    "year after 19 years with the company. The next meeting will be held on 9 December 2025.",
    "Signed: Margaret Ellison, Chair",
]

ACQUISITION_RELEASE = [
    "FOR IMMEDIATE RELEASE",
    "Northwind Solar to acquire Brightfield Energy Storage for $86 million",
    "DENVER, Colorado - 6 October 2025 - Northwind Solar Inc. (NYSE: NWSR), a developer of "
    "utility-scale solar farms in the western United States, today announced an agreement to "
    "acquire Brightfield Energy Storage LLC of Austin, Texas, for $86 million in cash and "
    "shares.",
    "Brightfield designs and installs battery systems that store solar power for use after "
    "sunset. The company was founded in 2018 by engineers Laura Castillo and Ben Adeyemi "
    "and employs 140 people in Austin and Phoenix. Its projects include a 200-megawatt-hour "
    "system for the Salt River Project in Arizona, completed in May 2025.",
    "“Customers no longer ask us for solar alone; they ask for power they can use at seven "
    "in the evening,” said Northwind chief executive Thomas Lindqvist. “Brightfield "
    "gives us that, and a team that has already built it at scale.”",
    "Under the agreement, Northwind will pay $61 million in cash and issue about 1.2 million "
    "new shares worth $25 million. Laura Castillo will join Northwind as president of its "
    "storage division. The deal is expected to close in the first quarter of 2026, subject "
    "to review by the Federal Energy Regulatory Commission.",
    "Goldman Sachs is acting as financial adviser to Northwind and Latham & Watkins as its "
    "legal counsel. Brightfield is advised by Piper Sandler and Vinson & Elkins.",
    "Northwind expects the acquisition to add between $40 million and $55 million to its "
    "revenue in 2026. The company will discuss the deal on a conference call at 11:00 "
    "Eastern Time on 7 October 2025.",
    "Media contact: Grace Holloway, Northwind Solar, press@northwind-solar.example, "
    "+1 303 555 0142.",
    "About Northwind Solar",
    "Northwind Solar Inc. builds and operates solar farms in Colorado, Utah, Nevada and New "
    "Mexico, with 2.3 gigawatts in operation. Founded in 2009 by Thomas Lindqvist and Ana "
    "Ruiz, the company reported revenue of $512 million in 2024 and employs 1,100 people.",
    "About Brightfield Energy Storage",
    "Brightfield Energy Storage LLC, founded in Austin in 2018, has installed more than "
    "900 megawatt-hours of battery storage for utilities and co-operatives in Texas, Arizona "
    "and New Mexico.",
]

SUPPLIER_LETTER = """Fromagerie Léonard & Fils
12 rue des Écoles, 39600 Arbois, France

Ms Charlotte Brandt
Purchasing Manager, Delikatessen Brandt GmbH
Königstraße 48, 70173 Stuttgart, Germany

Arbois, 15 September 2025

Dear Ms Brandt,

Thank you for your order no. DB-2025-0915 of 8 September for 240 wheels of Comté
“Réserve 18 mois” and 60 Morbier AOP. I’m pleased to confirm the price of €14.20
per kilo for the Comté and €11.75 per kilo for the Morbier, ex works Arbois.

Because of this summer’s drought in the Jura, the milk co-operative at Poligny has
raised its prices by 6%. We have absorbed the increase for this order, but from
1 January 2026 our price list will rise by about 4%. You’ll receive the new list
from my colleague Aurélie Marchand before 31 October.

The goods will leave Arbois on 29 September with our carrier, Transports Girardot,
and should reach your warehouse in Stuttgart–Feuerbach on 1 October. The invoice
total is €31,480.00, payable within 30 days to our account at Crédit Agricole
Franche-Comté.

François Léonard will be at the Anuga fair in Köln from 4 to 8 October — he’d be
delighted to meet you at our stand (Hall 10.1) to talk about next year’s volumes.

With kind regards,

Hélène Léonard
Directrice commerciale
"""

GRANT_PARAGRAPHS = [
    "This summary describes the grant agreement signed on 2 July 2025 between the Ellery "
    "Foundation of Boston, Massachusetts, and Open Rivers Trust, a charity based in "
    "Shrewsbury, England, for the Severn Headwaters Restoration Project.",
    "The Foundation will pay a total of $1,250,000 over three years to restore 14 kilometres "
    "of river habitat on the upper River Severn in Powys, Wales. Work will be led by the "
    "Trust's project director, Dr Gwen Parry-Jones, with ecologists from Aberystwyth "
    "University.",
    "Payments are tied to the milestones below. Each payment is released after the "
    "Foundation's programme officer, Michael Tanaka, accepts a written progress report.",
    "The Trust must keep the grant in a separate account at Barclays and report any unspent "
    "funds by 31 August 2028. The Foundation may withhold payments if a milestone is more "
    "than six months late.",
    "Natural Resources Wales has confirmed that the planned works do not need a new permit. "
    "Landowners along the river, including the Vaynor Estate, have signed access agreements.",
    "Questions about this agreement should be sent to Sarah Whitcombe, Grants Manager at the "
    "Ellery Foundation, 100 Federal Street, Boston.",
]
GRANT_MILESTONES = [
    ("Milestone", "Due date", "Payment"),
    ("Baseline survey of fish and invertebrates", "30 September 2025", "$250,000"),
    ("Removal of two weirs near Llanidloes", "30 June 2026", "$400,000"),
    ("Tree planting on 9 km of riverbank", "31 March 2027", "$350,000"),
    ("Final monitoring report", "31 May 2028", "$250,000"),
]


def make_pdf(paragraphs: list[str], title: str, *, page_break_before: str = "") -> bytes:
    pdf = FPDF()
    pdf.core_fonts_encoding = "windows-1252"  # so that £, € and curly quotes are encodable
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(title)
    pdf.set_author("durabatch sample documents")
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=14)
    pdf.multi_cell(0, 8, paragraphs[0])
    pdf.ln(4)
    pdf.set_font("Helvetica", size=11)
    for paragraph in paragraphs[1:]:
        if paragraph == page_break_before:
            pdf.add_page()
        pdf.multi_cell(0, 6, paragraph)
        pdf.ln(4)
    return bytes(pdf.output())


def make_docx() -> bytes:
    document = docx.Document()
    document.core_properties.created = FIXED_DATE
    document.core_properties.modified = FIXED_DATE
    document.add_heading("Grant agreement summary: Severn Headwaters Restoration Project", 1)
    for paragraph in GRANT_PARAGRAPHS[:3]:
        document.add_paragraph(paragraph)
    table = document.add_table(rows=0, cols=3)
    for row in GRANT_MILESTONES:
        cells = table.add_row().cells
        for cell, value in zip(cells, row, strict=True):
            cell.text = value
    for paragraph in GRANT_PARAGRAPHS[3:]:
        document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return _with_fixed_zip_times(buffer.getvalue())


def _with_fixed_zip_times(package: bytes) -> bytes:
    """Rewrite a zip with fixed member dates, so that regenerating changes no bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(package)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            member = zipfile.ZipInfo(info.filename, FIXED_DATE.timetuple()[:6])
            dst.writestr(member, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def make_damaged_pdf(good: bytes) -> bytes:
    """A PDF cut off part-way through, with a run of garbage where a page should be."""
    noise = random.Random(20251001).randbytes(600)
    return good[: len(good) // 3] + noise


def main() -> None:
    minutes = make_pdf(BOARD_MINUTES, "Harbourline Freight board minutes")
    files = {
        "harbourline_board_minutes.pdf": minutes,
        "northwind_acquisition_release.pdf": make_pdf(
            ACQUISITION_RELEASE, "Press release", page_break_before="About Northwind Solar"
        ),
        "grant_agreement_summary.docx": make_docx(),
        "supplier_letter_cp1252.txt": SUPPLIER_LETTER.replace("\n", "\r\n").encode("cp1252"),
        "damaged_report.pdf": make_damaged_pdf(minutes),
    }
    for name, data in files.items():
        (OUT / name).write_bytes(data)
        print(f"{name}: {len(data):,} bytes")


if __name__ == "__main__":
    main()
